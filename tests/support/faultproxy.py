"""A small TCP fault proxy for tests: sits between our code and a real server on loopback.

Faults are switched at run time: ``latency`` (seconds added per chunk), ``reset_after``
(abort each connection with a TCP RST once that many response bytes went through),
``refuse`` (accept, then reset at once) and ``blackhole`` (accept and never answer).
``sever()`` resets every open connection at once (a database restart as its clients see it);
``slow_down(times)`` answers the next ``times`` HTTP requests with S3's ``503 SlowDown``
instead of forwarding them; ``die_after(total)`` lets ``total`` response bytes through (all
connections together), then cuts the one carrying the next byte and refuses every later one
(the server dies mid-transfer) until ``heal()``.
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
        self.slowdowns_left = 0
        self.slowdowns_sent = 0
        self.severed = 0
        self.bytes_back = 0  # response bytes forwarded, all connections together
        self._die_after: int | None = None
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
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
        self.slowdowns_left = 0
        self._die_after = None

    def die_after(self, total_bytes: int) -> None:
        self._die_after = total_bytes

    def sever(self) -> int:
        """Reset every connection open now (both sides see a dead peer); returns how many."""
        with self._open_lock:
            victims = list(self._open)
        for sock in victims:
            self._abort(sock)
        self.severed += len(victims)
        return len(victims)

    def slow_down(self, times: int) -> None:
        """Answer the next ``times`` requests with ``503 SlowDown``, as S3 does when throttling.

        Open keep-alive connections are closed first (gracefully: a client pool drops them without
        counting a retry), so the next requests arrive on new connections and meet the 503s.
        """
        self.slowdowns_left = times
        with self._open_lock:
            victims = list(self._open)
        for sock in victims:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

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
        if self.slowdowns_left > 0:
            self.slowdowns_left -= 1
            self._answer_slow_down(client)
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
        with self._open_lock:
            self._open.add(client)
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
                        if self._die_after is not None and self.bytes_back + len(data) > self._die_after:
                            self.refuse = True
                            self._abort(client)
                            return
                        sent_back += len(data)
                        self.bytes_back += len(data)
                        client.sendall(data)
                    else:
                        upstream.sendall(data)
        except (OSError, ValueError):  # ValueError: select() on a socket sever() closed under us
            return
        finally:
            with self._open_lock:
                self._open.discard(client)
            with contextlib.suppress(OSError):
                upstream.close()
            with contextlib.suppress(OSError):
                client.close()

    def _answer_slow_down(self, client: socket.socket) -> None:
        """Read one HTTP request (headers, then its body unless it waits for 100-continue) and refuse it."""
        client.settimeout(5)
        try:
            head = b""
            while b"\r\n\r\n" not in head:
                data = client.recv(65536)
                if not data:
                    return
                head += data
            headers, _, body = head.partition(b"\r\n\r\n")
            lowered = headers.lower()
            if b"expect: 100-continue" not in lowered:
                length = 0
                for line in lowered.split(b"\r\n"):
                    if line.startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                chunked = b"transfer-encoding: chunked" in lowered
                while (len(body) < length) or (chunked and not body.endswith(b"0\r\n\r\n")):
                    data = client.recv(65536)
                    if not data:
                        break
                    body += data
            payload = (
                b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
                b"<Message>Please reduce your request rate.</Message><RequestId>faultproxy</RequestId></Error>"
            )
            client.sendall(
                b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
                + f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
            self.slowdowns_sent += 1
        except (OSError, ValueError):
            return
        finally:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_WR)
            with contextlib.suppress(OSError):
                client.close()

    def _abort(self, sock: socket.socket) -> None:
        """Close with RST (SO_LINGER 0), as a crashed peer or a middlebox would."""
        self.resets += 1
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
