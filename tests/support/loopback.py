"""What every HTTP test server of ours shares: a free port on 127.0.0.1, a daemon thread, a context manager."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LoopbackServer:
    """Subclasses name their handler (``_handler_class``), the attribute it reads them by, and a label.

    They set ``_stopping`` (an Event their handlers watch), ``_httpd`` and ``_thread`` to None in ``__init__``.
    """

    _label = "test"
    _handler_attribute = "server_state"
    _stopping: threading.Event
    _httpd: ThreadingHTTPServer | None
    _thread: threading.Thread | None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError(f"the {self._label} test server is not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self):
        handler = type("BoundHandler", (self._handler_class(),), {self._handler_attribute: self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._httpd.request_queue_size = 128
        name = f"{self._label.lower()}-test-server"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name=name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
