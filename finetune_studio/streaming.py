"""Streaming response bodies under ASGI.

Django's ASGI handler collects a *sync* iterator whole before sending the first byte, so a
large download would sit in memory. ``response_chunks`` hands chunks over one by one from a
read-ahead thread instead (bounded: a few chunks in flight), and passes sync iterators through
unchanged under WSGI. Errors raised while producing propagate to the server, which drops the
connection: the client sees an incomplete transfer, never a complete-looking truncated file.
"""

import queue
import threading
from collections.abc import AsyncIterator, Iterable, Iterator

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest

COALESCE_BYTES = 512 * 1024


def coalesced(chunks: Iterable[bytes], *, minimum: int = COALESCE_BYTES) -> Iterator[bytes]:
    """Join small chunks into pieces of at least ``minimum`` bytes: fewer thread hops and messages.

    The first chunk goes out at once, so a download visibly starts before storage answers.
    """
    chunks = iter(chunks)
    first = next(chunks, None)
    if first:
        yield first
    pending: list[bytes] = []
    size = 0
    for chunk in chunks:
        if not chunk:
            continue
        if size == 0 and len(chunk) >= minimum:
            yield chunk
            continue
        pending.append(chunk)
        size += len(chunk)
        if size >= minimum:
            yield b"".join(pending)
            pending, size = [], 0
    if pending:
        yield b"".join(pending)


class _ReadAhead:
    """Produces chunks in a thread into a small queue; the consumer takes them one at a time."""

    _DONE = object()

    def __init__(self, chunks: Iterator[bytes], depth: int = 4):
        self._chunks = chunks
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stopped = threading.Event()
        threading.Thread(target=self._produce, daemon=True, name="read-ahead").start()

    def _produce(self) -> None:
        try:
            for chunk in self._chunks:
                if not self._offer(chunk):
                    return
            self._offer(self._DONE)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self._offer(exc)
        finally:
            close = getattr(self._chunks, "close", None)
            if close:
                close()

    def _offer(self, item) -> bool:
        while not self._stopped.is_set():
            try:
                self._queue.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def take(self):
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def stop(self) -> None:
        self._stopped.set()


async def _async_chunks(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    ahead = _ReadAhead(chunks)
    take = sync_to_async(ahead.take, thread_sensitive=False)
    try:
        while (chunk := await take()) is not _ReadAhead._DONE:
            yield chunk
    finally:
        ahead.stop()


def response_chunks(request, chunks: Iterable[bytes]) -> Iterable[bytes] | AsyncIterator[bytes]:
    """The body to give StreamingHttpResponse for this request (DRF requests are unwrapped)."""
    django_request = getattr(request, "_request", request)
    if isinstance(django_request, ASGIRequest):
        return _async_chunks(iter(chunks))
    return chunks


def release_connection() -> None:
    """Give the request thread's database connection back to the pool while a stream stays open.

    Under ASGI each request keeps its own thread, and its connection until the response ends:
    for SSE, hours. Without this, every open stream would hold a pooled connection (PoolTimeout
    after DB_POOL_MAX_SIZE streams). The next query simply takes a connection again.
    """
    from django.db import connection

    if not connection.in_atomic_block:
        connection.close()
