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
            # A turn that only calls tools may have no content (null in OpenAI's shape).
            return "\n".join(str(message.get("content") or "") for message in messages if isinstance(message, dict))
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


class FaultyLoopbackServer(LoopbackServer):
    """A loopback server that records requests and applies injected faults. Subclasses name the fault kinds
    they implement (``_fault_kinds``), the paths a fault applies to by default (``_fault_paths``) and how a
    fault's model is compared with a request's (``_same_model``); ``__init__`` sets ``requests``, ``_faults``
    and ``_lock``."""

    _fault_kinds: tuple[str, ...] = ()
    _fault_paths: tuple[str, ...] = ()
    requests: list[RecordedRequest]
    _faults: list[Fault]
    _lock: threading.Lock

    @staticmethod
    def _same_model(mine: str, theirs: str) -> bool:
        return mine == theirs

    def inject(self, kind: str, **options) -> Fault:
        """Add a fault; the first matching fault with times left applies to each request."""
        if kind not in self._fault_kinds:
            raise ValueError(f"unknown fault kind {kind!r}")
        options.setdefault("paths", self._fault_paths)
        fault = Fault(kind=kind, same_model=self._same_model, **options)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, path: str, model: str | None) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(path, model):
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
        return None

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)
