"""What every HTTP test server of ours shares: a free port on 127.0.0.1, a daemon thread, a context manager, the
requests it recorded and the faults injected into it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class RecordedRequest:
    method: str
    path: str
    body: dict | None
    at: float
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def model(self) -> str | None:
        return (self.body or {}).get("model")

    @property
    def prompt(self) -> str:
        """The text asked: every message's content (a chat), or the prompt (Ollama's generate)."""
        body = self.body or {}
        if "messages" in body:
            messages = body.get("messages") or []
            return "\n".join(str(message.get("content", "")) for message in messages if isinstance(message, dict))
        return str(body.get("prompt", ""))


@dataclass
class Fault:
    """One injected misbehaviour on ``paths``. ``times=None`` means every matching request; ``same_model``
    compares a fault's model with a request's (Ollama's server ignores a ``:latest`` tag)."""

    kind: str
    paths: tuple[str, ...]
    status: int = 500
    delay: float = 0.0
    times: int | None = None
    model: str | None = None
    message: str = "injected failure"
    headers: dict[str, str] = field(default_factory=dict)
    same_model: Callable[[str, str], bool] = field(default=lambda mine, theirs: mine == theirs, repr=False)

    def matches(self, path: str, model: str | None) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        if path not in self.paths:
            return False
        return self.model is None or self.same_model(self.model, model or "")


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
