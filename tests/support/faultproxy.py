"""A small TCP fault proxy for tests: sits between our code and a real server on loopback.

Faults are switched at run time: ``latency`` (seconds added per chunk), ``reset_after``
(abort each connection with a TCP RST once that many response bytes went through),
``refuse`` (accept, then reset at once) and ``blackhole`` (accept and never answer).
No packaged tool does this offline on this machine, so we keep our own.
"""

import contextlib
import select
import socket
import struct
import threading
import time


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int):
        self.upstream = (upstream_host, upstream_port)
        self.latency = 0.0
        self.reset_after: int | None = None
        self.refuse = False
        self.blackhole = False
        self.connections = 0
        self.resets = 0
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port = self._listener.getsockname()[1]
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True, name="fault-proxy")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "FaultProxy":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        with contextlib.suppress(OSError):
            self._listener.close()

    def heal(self) -> None:
        self.latency = 0.0
        self.reset_after = None
        self.refuse = False
        self.blackhole = False

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        if self.refuse:
            self._abort(client)
            return
        if self.blackhole:
            while not self._stopped.is_set() and self.blackhole:
                time.sleep(0.05)
            client.close()
            return
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            self._abort(client)
            return
        sent_back = 0
        sockets = [client, upstream]
        try:
            while not self._stopped.is_set():
                readable, _, _ = select.select(sockets, [], [], 0.2)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is upstream:
                        if self.latency:
                            time.sleep(self.latency)
                        if self.reset_after is not None and sent_back + len(data) > self.reset_after:
                            client.sendall(data[: max(0, self.reset_after - sent_back)])
                            self._abort(client)
                            return
                        sent_back += len(data)
                        client.sendall(data)
                    else:
                        upstream.sendall(data)
        except OSError:
            return
        finally:
            with contextlib.suppress(OSError):
                upstream.close()
            with contextlib.suppress(OSError):
                client.close()

    def _abort(self, sock: socket.socket) -> None:
        """Close with RST (SO_LINGER 0), as a crashed peer or a middlebox would."""
        self.resets += 1
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
