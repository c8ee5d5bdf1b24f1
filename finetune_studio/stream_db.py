"""Database connections of event streams (SSE): held only while a stream reads, shared out in turn.

An open stream needs the database now and then: when it opens (authentication, authorisation,
its start position), for its backlog, to catch up on lines it missed, to re-check its access.
Between reads it holds no connection (``release_connection``). After a web process restarts,
every browser reconnects at once; without a turn to wait for, a thousand threads queued in the
psycopg pool and the last ones gave up after DB_POOL_TIMEOUT, answering "database unavailable"
(it was fine) and cutting streams mid-body whose backlog read timed out.

- ``StreamSlots``: per event loop, at most STREAM_DB_SLOTS stream reads and openings hold a
  connection at once (fewer than the pool's connections, so other requests still get one). The
  rest wait on the event loop: upkeep of open streams first, then openings, then backlogs.
- ``stream_read`` runs one read of an open stream in a worker thread when its turn comes. A pool
  that is busy anyway (other requests took every connection) is waited out: an open stream is
  never cut for want of a connection. A database that is down still raises. Identical reads
  waiting for a turn are made once (the streams of a job reopening at one position).
- ``stream_opening`` gives an SSE view's opening its turn; an opening that waited
  STREAM_OPEN_WAIT_SECONDS is answered 503 "busy" with Retry-After (shedding, said truthfully).
- ``pool_exhausted`` tells a busy pool (every connection in use) from an unreachable database;
  the API's exception handler answers the first "busy", the second "database unavailable".
"""

import asyncio
import collections
import contextlib
import functools
import logging
import weakref
from collections.abc import AsyncIterator, Callable, Hashable
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import JsonResponse

logger = logging.getLogger(__name__)

T = TypeVar("T")

# The kinds of turns, in the order a freed slot serves them.
CHECK = "check"  # an open stream's upkeep: access re-checks, a feed's position (few: one per interval)
OPEN = "open"  # a stream's opening (the view: authentication, authorisation, start position)
READ = "read"  # an open stream's lines: its backlog, a catch-up
_ORDER = (CHECK, OPEN, READ)

_BUSY_RETRY_PAUSES = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)  # an open stream waiting out a busy pool


def release_connection() -> None:
    """Give the request thread's database connection back to the pool while a stream stays open.

    Under ASGI each request keeps its own thread, and its connection until the response ends:
    for SSE, hours. Without this, every open stream would hold a pooled connection (PoolTimeout
    after DB_POOL_MAX_SIZE streams). The next query simply takes a connection again.
    """
    from django.db import connection

    if not connection.in_atomic_block:
        connection.close()


_connection_errors_seen = 0


def pool_exhausted(exc: BaseException) -> bool:
    """Whether ``exc`` is the pool's timeout while every connection was in use and the database answered.

    psycopg's pool raises the same PoolTimeout when it cannot open connections (the database is
    down): then the pool is not full, or its connection attempts have been failing since the
    last time we looked.
    """
    global _connection_errors_seen
    from django.db import connection

    pool = getattr(connection, "pool", None)  # PostgreSQL with DATABASES' "pool" option only
    if pool is None:
        return False
    from psycopg_pool import PoolTimeout

    if not isinstance(exc, PoolTimeout) and not isinstance(exc.__cause__, PoolTimeout):
        return False
    stats = pool.get_stats()
    errors = stats.get("connections_errors", 0)
    failing = errors > _connection_errors_seen
    _connection_errors_seen = errors
    return stats["pool_size"] >= stats["pool_max"] and not failing


class SlotTimeout(Exception):
    """No slot came free in time."""


class StreamSlots:
    """The turns of one event loop's streams at the database: at most ``size`` hold a connection at once.

    Waiting is a future on the loop, not a thread blocked in the pool. A freed slot goes to the
    oldest waiting turn of the first kind in ``_ORDER`` that has one:
    - upkeep (CHECK) first: access re-checks must keep running during a storm, and they are few;
    - then openings: in a storm everyone is let in first (an opening is cheap, and it is what
      waits against STREAM_OPEN_WAIT_SECONDS; an open stream waits for nothing but its lines);
    - then the lines (READ): backlogs and catch-ups, in order. Live batches need no turn, so
      streams already open keep receiving them meanwhile.
    """

    _by_loop: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, StreamSlots]" = weakref.WeakKeyDictionary()

    def __init__(self, size: int) -> None:
        self.size = size
        self.in_use = 0
        self.waiting: dict[str, collections.deque] = {kind: collections.deque() for kind in _ORDER}
        self.queued_reads: dict[Hashable, asyncio.Task] = {}  # shared reads still waiting for their turn

    @classmethod
    def here(cls) -> "StreamSlots":
        loop = asyncio.get_running_loop()
        slots = cls._by_loop.get(loop)
        if slots is None:
            slots = cls._by_loop[loop] = cls(settings.STREAM_DB_SLOTS)
        return slots

    @contextlib.asynccontextmanager
    async def held(self, kind: str, *, timeout: float | None = None) -> AsyncIterator[None]:
        await self._acquire(kind, timeout)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, kind: str, timeout: float | None) -> None:
        if self.in_use < self.size and not any(self.waiting.values()):
            self.in_use += 1
            return
        turn = asyncio.get_running_loop().create_future()
        self.waiting[kind].append(turn)
        try:
            await asyncio.wait_for(asyncio.shield(turn), timeout)
        except BaseException as exc:  # the wait timed out, or the client left while waiting
            if turn.done() and not turn.cancelled():
                self._release()  # handed over just as we gave up: pass it on
            else:
                turn.cancel()
                with contextlib.suppress(ValueError):
                    self.waiting[kind].remove(turn)
            if isinstance(exc, TimeoutError):
                raise SlotTimeout() from None
            raise

    def _release(self) -> None:
        for kind in _ORDER:
            queue = self.waiting[kind]
            while queue:
                turn = queue.popleft()
                if not turn.done():
                    turn.set_result(None)  # the slot passes to it: in_use stays
                    return
        self.in_use -= 1


def _released(function: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(function)
    def run(*args, **kwargs) -> T:
        try:
            return function(*args, **kwargs)
        finally:
            release_connection()

    return run


async def stream_read(
    function: Callable[..., T], /, *args: Any, turn: str = READ, shared: bool = False, **kwargs: Any
) -> T:
    """``function(*args, **kwargs)`` (a few queries) for an open stream, in a worker thread, when its turn comes.

    ``turn`` is READ (lines) or CHECK (upkeep). Holds a pooled connection only while it runs. When
    the pool is busy anyway the read waits and tries again, as long as it takes: the stream stays
    open. Other database errors propagate.

    ``shared``: for a pure read (same arguments, same answer at one moment). A request made while an
    identical read still waits for its turn joins it instead of queueing another: that read starts
    after both were asked, so its answer is as fresh as each would have got. In a storm, the
    streams of one job that opened at the same position share one backlog read.
    """
    slots = StreamSlots.here()
    if not shared:
        return await _read_in_turn(slots, function, args, kwargs, turn, key=None)
    key = (function, args, tuple(sorted(kwargs.items())))
    read = slots.queued_reads.get(key)
    if read is None:
        read = asyncio.get_running_loop().create_task(_read_in_turn(slots, function, args, kwargs, turn, key=key))
        read.add_done_callback(_retrieve)  # a read whose streams all left must not warn "never retrieved"
        slots.queued_reads[key] = read
    return await asyncio.shield(read)  # a stream that leaves does not cancel the others' read


async def _read_in_turn(slots: "StreamSlots", function, args, kwargs, turn: str, *, key) -> Any:
    run = sync_to_async(_released(function), thread_sensitive=False)
    attempt = 0
    try:
        while True:
            async with slots.held(turn):
                if key is not None and slots.queued_reads.get(key) is asyncio.current_task():
                    del slots.queued_reads[key]  # it starts now: later requests would get an older answer
                try:
                    return await run(*args, **kwargs)
                except Exception as exc:
                    if not pool_exhausted(exc):
                        raise
            if attempt == 0:
                logger.warning("Every database connection is in use: an open stream waits for its read")
            await asyncio.sleep(_BUSY_RETRY_PAUSES[min(attempt, len(_BUSY_RETRY_PAUSES) - 1)])
            attempt += 1
    finally:
        if key is not None and slots.queued_reads.get(key) is asyncio.current_task():
            del slots.queued_reads[key]


def _retrieve(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()


def busy_message(reason: str) -> str:
    return f"The studio is busy: {reason}; retry in {settings.BUSY_RETRY_AFTER_SECONDS} s."


def busy_response(reason: str) -> JsonResponse:
    """503 that says what happened (the studio is busy, the database is fine) and when to come back."""
    response = JsonResponse({"detail": busy_message(reason)}, status=503)
    response["Retry-After"] = str(settings.BUSY_RETRY_AFTER_SECONDS)
    return response


def stream_opening(view: Callable) -> Callable:
    """An SSE view whose GET waits its turn (``StreamSlots``) before it runs; other methods run as they come.

    The view runs in the request's thread, as Django runs sync views, and gives its connection
    back when it returns (the stream's body reads with ``stream_read``). A GET that waited
    STREAM_OPEN_WAIT_SECONDS is answered ``busy_response(...)``.
    """
    opening = sync_to_async(_released(view), thread_sensitive=True)
    other = sync_to_async(view, thread_sensitive=True)

    @functools.wraps(view)
    async def in_turn(request, *args, **kwargs):
        if request.method not in ("GET", "HEAD"):
            return await other(request, *args, **kwargs)
        try:
            async with StreamSlots.here().held(OPEN, timeout=settings.STREAM_OPEN_WAIT_SECONDS):
                return await opening(request, *args, **kwargs)
        except SlotTimeout:
            logger.warning("Shedding a stream opening: no database slot within %ss", settings.STREAM_OPEN_WAIT_SECONDS)
            return busy_response(f"too many streams are opening at once (waited {settings.STREAM_OPEN_WAIT_SECONDS} s)")

    return in_turn
