"""The live log stream of a job (GET /api/v1/jobs/:id/logs as SSE): the log table, then live batches.

- The table is the stream's storage: ``replay_page`` turns the lines after a seq into ``logs``
  events (id = last seq), so a new client, a reconnect with Last-Event-ID and any gap are
  answered from it, archived logs included.
- ``JobFeed``: each web process holds one django-eventstream listener per watched job, shared
  by all the job's open streams there. Batches arrive on it (through Redis in production),
  are encoded once, and every stream reads them from the feed's list at its own pace.
- ``job_log_stream`` sends each seq exactly once and in order: a batch that arrives out of
  order, or after some were lost (Redis down, a listener overflow, a slow client), makes the
  stream read the missing seqs from the table; the feed's idle timer sends keep-alives and
  notices lines or an end whose event never came. After ``end`` the stream closes.
- Access is re-checked on a timer while the stream is open (``finetune_studio.streaming.revocable``).
- The stream holds a database connection only while it reads (backlog, catch-up, position); reads
  and openings take turns per process, and a busy pool is waited out, never a reason to cut a
  stream (``finetune_studio.stream_db``; a storm of 1,000-5,000 openings: bench/bench_logs_storm.py).

1,000 streams of a 20 lines/s job cost the web process one wake-up and a few list reads per
stream per batch: bench/bench_logs_stream.py.
"""

import asyncio
import contextlib
import json
import logging
import re
import weakref
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

from django.conf import settings
from django_eventstream.event import Event
from django_eventstream.utils import make_id, sse_encode_event
from django_eventstream.views import Listener, get_listener_manager

from finetune_studio.eventstream_patches import on_redis_subscribed
from finetune_studio.streaming import StreamAccess, release_connection, revocable

from .events import job_channel

logger = logging.getLogger(__name__)

OPENING = b":" + b" " * 2048 + b"\n\nevent: stream-open\ndata:\n\n"  # padding first, as django-eventstream does
KEEP_ALIVE = b"event: keep-alive\ndata:\n\n"
# A stream further behind than this reads the rest from the table.
_FEED_KEPT_BATCHES = 2048
_FEED_KEPT_BYTES = 8 * 1024 * 1024
_LOGS_RANGE = re.compile(r'^\{"prev_seq":(\d+),"last_seq":(\d+)[,}]')


def encode_event(job_id: int, event_type: str, data: str, seq: int | str | None) -> bytes:
    event_id = make_id({job_channel(job_id): seq}) if seq is not None else None
    return sse_encode_event(event_type, data, event_id=event_id).encode()


# --- The table as the stream's storage --------------------------------------------------------


@dataclass
class Replay:
    body: bytes  # encoded SSE events
    sent: int  # the last seq they carry (or the ``after`` asked for when none)
    done: bool  # nothing more in the table (up to ``upto``) for now
    ended: bool  # the job finished and everything was read: ``body`` ends with an ``end`` event


def replay_page(job_id: int, after: int, *, upto: int | None = None) -> Replay:
    """The lines after ``after`` (up to ``upto``) as ``logs`` events of LOG_STREAM_EVENT_LINES lines each.

    One page holds at most LOG_STREAM_REPLAY_EVENTS events. When the table has nothing more and
    the job has finished (and no ``upto`` limits the read), an ``end`` event closes the page.
    """
    try:
        return _replay_page(job_id, after, upto)
    finally:
        release_connection()


def _replay_page(job_id: int, after: int, upto: int | None) -> Replay:
    from jobs.models import Job

    from .selectors import log_lines, log_stream_of, serialize_line
    from .services import encode_logs_event

    per_event = settings.LOG_STREAM_EVENT_LINES
    wanted = settings.LOG_STREAM_REPLAY_EVENTS * per_event
    if upto is not None:
        wanted = max(0, min(wanted, upto - after))
    stream = log_stream_of(job_id)
    lines = log_lines(job_id, after=after, limit=wanted, stream=stream) if wanted else []
    if upto is not None:
        lines = [line for line in lines if line["seq"] <= upto]
    totals = None
    if stream is not None:
        totals = {"line_count": stream.line_count, "warn_count": stream.warn_count, "error_count": stream.error_count}
    body = []
    sent = after
    for start in range(0, len(lines), per_event):
        chunk = [serialize_line(line) for line in lines[start : start + per_event]]
        last = chunk[-1]["seq"]
        body.append(encode_event(job_id, "logs", encode_logs_event(sent, chunk, totals), last))
        sent = last
    done = len(lines) < wanted or (upto is not None and sent >= upto)
    ended = False
    if done and upto is None:
        status = Job.objects.filter(id=job_id).values_list("status", flat=True).first()
        if status in Job.FINISHED:
            body.append(encode_event(job_id, "end", json.dumps({"status": status, "last_seq": sent}), sent))
            ended = True
    return Replay(b"".join(body), sent, done, ended)


def table_position(job_id: int) -> tuple[int, bool]:
    """(the job's last seq, whether it has finished)."""
    from jobs.models import Job

    try:
        row = Job.objects.filter(id=job_id).values_list("status", "log_stream__last_seq").first()
    finally:
        release_connection()
    if row is None:
        return 0, True
    status, last_seq = row
    return last_seq or 0, status in Job.FINISHED


async def _replay(job_id: int, after: int, *, upto: int | None = None) -> Replay:
    """``replay_page`` when its turn comes, holding a connection only while it reads (finetune_studio.stream_db).

    Streams asking the same page at once share one read (nothing in a ``Replay`` is per stream).
    """
    from finetune_studio.stream_db import stream_read

    return await stream_read(replay_page, job_id, after, upto=upto, shared=True)


async def _position(job_id: int) -> tuple[int, bool]:
    from finetune_studio.stream_db import CHECK, stream_read

    return await stream_read(table_position, job_id, turn=CHECK, shared=True)


# --- One listener per watched job and process --------------------------------------------------


class LiveBatch:
    """One event as a feed received it, encoded once for all the streams that read it."""

    __slots__ = ("kind", "prev", "last", "finished", "body")

    def __init__(self, kind: str, body: bytes, *, prev: int = -1, last: int = -1, finished: bool = False):
        self.kind = kind  # "logs", "end", "tick" (the feed's idle check) or another event type
        self.prev = prev  # logs: the seq before the batch's first line
        self.last = last  # logs, end, tick: the last seq
        self.finished = finished  # tick: the job has finished
        self.body = body

    @classmethod
    def of(cls, job_id: int, event: Event) -> "LiveBatch":
        body = encode_event(job_id, event.type, event.data, event.id)
        if event.type == "logs":
            covered = _LOGS_RANGE.match(event.data)
            if covered:
                return cls("logs", body, prev=int(covered[1]), last=int(covered[2]))
        elif event.type == "end":
            return cls("end", body, last=int(json.loads(event.data).get("last_seq") or 0))
        return cls(event.type, body)


class _FeedListener(Listener):
    """A django-eventstream listener whose events are taken by its feed, on the feed's loop."""

    # After a Redis re-subscription (finetune_studio.eventstream_patches) the feed reads the table itself.
    catches_up_itself = True

    def __init__(self, feed: "JobFeed") -> None:
        super().__init__()
        self.feed = feed
        self.take_scheduled = False

    def wake_threadsafe(self) -> None:  # called by the library's ListenerManager, under its lock
        if self.take_scheduled:
            return
        self.take_scheduled = True
        try:
            on_its_loop = asyncio.get_running_loop() is self.loop
        except RuntimeError:
            on_its_loop = False
        if on_its_loop:
            self.loop.call_soon(self.feed.take)
        else:
            self.loop.call_soon_threadsafe(self.feed.take)


class JobFeed:
    """The live batches of one job in this process (one event loop), kept for the job's open streams.

    Streams keep a cursor into ``batches``; the feed keeps the last _FEED_KEPT_BATCHES (at most
    _FEED_KEPT_BYTES) or so.
    When nothing arrived for LOG_STREAM_KEEP_ALIVE_SECONDS it adds a ``tick`` with the table's
    last seq: streams send a keep-alive, or read what they missed (a lost event, the end).
    """

    _by_loop: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, JobFeed]]" = weakref.WeakKeyDictionary()

    def __init__(self, job_id: int, loop: asyncio.AbstractEventLoop) -> None:
        self.job_id = job_id
        self.channel = job_channel(job_id)
        self.loop = loop
        self.batches: list[LiveBatch] = []
        self.base = 0  # the index of batches[0] since the feed began
        self.kept_bytes = 0
        self.arrivals = 0
        self.streams = 0
        self.waiters: list[asyncio.Future] = []
        self.tasks: set[asyncio.Task] = set()
        self.listener = _FeedListener(self)
        self.listener.loop = loop
        self.listener.channels = {self.channel}
        self.listener.user_id = f"feed-{job_id}"
        get_listener_manager().add_listener(self.listener)
        self.timer = loop.create_task(self._tick_when_idle())

    @classmethod
    @contextlib.contextmanager
    def joined(cls, job_id: int) -> Iterator["JobFeed"]:
        """This loop's feed of the job (made by its first stream, closed after its last) while a stream runs."""
        loop = asyncio.get_running_loop()
        feeds = cls._by_loop.setdefault(loop, {})
        feed = feeds.get(job_id)
        if feed is None:
            feed = feeds[job_id] = cls(job_id, loop)
        feed.streams += 1
        try:
            yield feed
        finally:
            feed.streams -= 1
            if feed.streams == 0:
                feed._close()

    def _close(self) -> None:
        get_listener_manager().remove_listener(self.listener)
        self.timer.cancel()
        feeds = self._by_loop.get(self.loop, {})
        if feeds.get(self.job_id) is self:
            del feeds[self.job_id]

    @property
    def end(self) -> int:
        return self.base + len(self.batches)

    def since(self, cursor: int) -> tuple[list[LiveBatch], int]:
        """The batches from ``cursor`` on, and the next cursor. Dropped ones come back as a gap to read."""
        return self.batches[max(0, cursor - self.base) :], self.end

    async def next_arrival(self) -> None:
        waiter = self.loop.create_future()
        self.waiters.append(waiter)
        await waiter

    def take(self) -> None:
        """Move what the listener received into the feed (runs on the feed's loop)."""
        manager = get_listener_manager()
        with manager.lock:
            self.listener.take_scheduled = False
            events = self.listener.channel_items.pop(self.channel, [])
            overflow, self.listener.overflow = self.listener.overflow, False
        if events:
            self._add([LiveBatch.of(self.job_id, event) for event in events])
        if overflow:  # the library dropped events past its queue's limit: the table has them
            self.tick_soon()

    def tick_soon(self) -> None:
        task = self.loop.create_task(self.tick())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def tick(self) -> None:
        try:
            last_seq, finished = await _position(self.job_id)
        except Exception:
            logger.warning("Log stream of job %s: reading its position failed", self.job_id, exc_info=True)
            self._add([LiveBatch("tick", KEEP_ALIVE)])
            return
        self._add([LiveBatch("tick", KEEP_ALIVE, last=last_seq, finished=finished)])

    def _add(self, batches: list[LiveBatch]) -> None:
        self.batches.extend(batches)
        self.kept_bytes += sum(len(batch.body) for batch in batches)
        self.arrivals += 1
        if len(self.batches) > 2 * _FEED_KEPT_BATCHES or self.kept_bytes > 2 * _FEED_KEPT_BYTES:
            dropped = 0
            while len(self.batches) - dropped > _FEED_KEPT_BATCHES or self.kept_bytes > _FEED_KEPT_BYTES:
                self.kept_bytes -= len(self.batches[dropped].body)
                dropped += 1
            del self.batches[:dropped]
            self.base += dropped
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _tick_when_idle(self) -> None:
        while True:
            seen = self.arrivals
            await asyncio.sleep(settings.LOG_STREAM_KEEP_ALIVE_SECONDS)
            if self.arrivals == seen:
                await self.tick()

    @classmethod
    def catch_up_everywhere(cls) -> None:
        """Every feed reads the table's position: events published while Redis was away never arrive."""
        for loop, feeds in list(cls._by_loop.items()):
            for feed in list(feeds.values()):
                if loop.is_closed():
                    continue
                loop.call_soon_threadsafe(feed.tick_soon)


on_redis_subscribed(JobFeed.catch_up_everywhere)


_READ_THE_TABLE = LiveBatch("tick", KEEP_ALIVE, last=2**63 - 1)  # a position beyond any stream's


# --- One stream ------------------------------------------------------------------------------


async def job_log_stream(job_id: int, start: int, access: StreamAccess) -> AsyncIterator[bytes]:
    """The SSE body: every seq after ``start`` exactly once and in order, live, until ``end``.

    ``access`` is re-checked every LOG_STREAM_ACCESS_RECHECK_SECONDS; a refusal ends the stream.
    """
    with JobFeed.joined(job_id) as feed, revocable(access, settings.LOG_STREAM_ACCESS_RECHECK_SECONDS):
        cursor = feed.end  # joined before reading the table: nothing committed later can be missed
        sent = start
        batches = [_READ_THE_TABLE]  # first the backlog: whatever the table holds after ``start``
        yield OPENING
        while True:
            if not batches:
                await feed.next_arrival()
                batches, cursor = feed.since(cursor)
                continue
            out = []
            for batch in batches:
                if batch.kind == "logs":
                    if batch.last <= sent:
                        continue  # already sent (from the table, or a replayed publish)
                    if batch.prev == sent:
                        out.append(batch.body)
                        sent = batch.last
                        continue
                    upto = batch.last  # out of order, or batches lost on the way: the table has them
                elif batch.kind == "end":
                    upto = None  # the table's last lines, then its own end event
                elif batch.kind == "tick":
                    if not batch.finished and batch.last <= sent:
                        if not out:
                            out.append(KEEP_ALIVE)
                        continue
                    upto = None
                else:
                    out.append(batch.body)
                    continue
                if out:
                    yield b"".join(out)
                    out = []
                while True:
                    page = await _replay(job_id, sent, upto=upto)
                    sent = page.sent
                    if page.body:
                        yield page.body
                    if page.ended:
                        return
                    if page.done:
                        break
            if out:
                yield b"".join(out)
            batches, cursor = feed.since(cursor)
