"""Streaming response bodies under ASGI.

Django's ASGI handler collects a *sync* iterator whole before sending the first byte, so a
large download would sit in memory. ``response_chunks`` hands chunks over one by one from a
read-ahead thread instead (bounded: a few chunks in flight), and passes sync iterators through
unchanged under WSGI. Errors raised while producing propagate to the server, which drops the
connection: the client sees an incomplete transfer, never a complete-looking truncated file.

Open event streams (SSE) re-check their access on a timer (``AccessWatch``, ``revocable``); their
database reads take turns (``stream_db``).
"""

import asyncio
import contextlib
import logging
import queue
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.db import connections

from .stream_db import CHECK, pool_exhausted, release_connection, stream_read

logger = logging.getLogger(__name__)

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
            # A body that touched the database (a chat counting its usage) did so on this thread's own
            # connection: closed with the thread, never left open for the server to run out of.
            connections.close_all()

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


class AccessWatch:
    """The open streams of one event loop whose access is re-checked every ``interval`` seconds.

    A stream is authorized once, when it opens; without this a revoked token (or a logged-out
    session, or a job moved away from the user) would keep receiving events for hours. The check
    runs on a timer, so an idle stream ends too, and reads the database, so it works across web
    processes. One timer per loop checks every open stream, and streams opened with the same
    grant (user, token or session, job) share one check. A revoked stream's task is cancelled,
    so it ends even while waiting for lines.
    """

    _by_loop: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, AccessWatch]]" = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.grants: dict[Hashable, tuple[Callable[[], bool], set[asyncio.Task]]] = {}
        self.revoked: weakref.WeakSet[asyncio.Task] = weakref.WeakSet()
        self.timer: asyncio.Task | None = None

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop, interval: float) -> "AccessWatch":
        watches = cls._by_loop.setdefault(loop, {})
        if interval not in watches:
            watches[interval] = cls(interval)
        return watches[interval]

    def add(self, key: Hashable, still_allowed: Callable[[], bool], task: asyncio.Task) -> None:
        self.grants.setdefault(key, (still_allowed, set()))[1].add(task)
        if self.timer is None or self.timer.done():
            self.timer = asyncio.get_running_loop().create_task(self._run())

    def discard(self, key: Hashable, task: asyncio.Task) -> None:
        entry = self.grants.get(key)
        if entry is not None:
            entry[1].discard(task)
            if not entry[1]:
                del self.grants[key]

    async def _run(self) -> None:
        while self.grants:
            await asyncio.sleep(self.interval)
            checks = {key: still_allowed for key, (still_allowed, _) in self.grants.items()}
            verdicts = await stream_read(_run_checks, checks, turn=CHECK)
            for key, allowed in verdicts.items():
                entry = self.grants.get(key)
                if allowed or entry is None:
                    continue
                for task in list(entry[1]):
                    self.revoked.add(task)
                    task.cancel()


def _run_checks(checks: dict[Hashable, Callable[[], bool]]) -> dict[Hashable, bool]:
    """Each grant's verdict; a check that fails (database down) closes its streams, as a refusal would.

    A pool busy with other requests is no verdict: it is raised, and ``stream_read`` runs the checks again
    when a connection is free (a storm of openings must not close the streams already open).
    """
    verdicts = {}
    try:
        for key, still_allowed in checks.items():
            try:
                verdicts[key] = bool(still_allowed())
            except Exception as exc:
                if pool_exhausted(exc):
                    raise
                logger.exception("Re-checking a log stream's access failed; closing it")
                verdicts[key] = False
    finally:
        release_connection()
    return verdicts


@dataclass(frozen=True)
class StreamAccess:
    """What opened a stream and must still hold while it runs."""

    grant: Hashable  # streams with equal grants share one check
    still_allowed: Callable[[], bool]


def session_still_signed_in(session_store: type, session_key: str | None, user_id: int) -> bool:
    """Whether the session a stream opened with still signs in that user, who is still active.

    Signing out deletes the session; signing in as someone else rewrites it: either ends the stream.
    """
    from django.contrib.auth import SESSION_KEY, get_user_model

    if session_key is None:
        return False
    session = session_store(session_key=session_key)
    if str(session.get(SESSION_KEY)) != str(user_id):
        return False
    return get_user_model().objects.filter(id=user_id, is_active=True).exists()


@contextlib.contextmanager
def revocable(access: StreamAccess, interval: float) -> Iterator[None]:
    """Inside a stream's body: re-check ``access`` every ``interval`` s; a refusal ends the body quietly.

    The stream's task is cancelled when access is refused, wherever it waits; that cancellation
    is taken back here, so the response ends like any finished stream.
    """
    task = asyncio.current_task()
    watch = AccessWatch.of(asyncio.get_running_loop(), interval)
    watch.add(access.grant, access.still_allowed, task)
    try:
        yield
    except asyncio.CancelledError:
        if task not in watch.revoked:
            raise
        task.uncancel()
        logger.info("Closing a stream: access was revoked")
    finally:
        watch.discard(access.grant, task)


async def while_allowed(chunks: AsyncIterator, access: StreamAccess, *, interval: float) -> AsyncIterator:
    """Pass a stream through until its access is refused (see ``revocable``)."""
    try:
        with revocable(access, interval):
            async for chunk in chunks:
                yield chunk
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
