"""The live log stream on django-eventstream, backed by the log table itself.

- ``publish_log_event`` sends a batch with its own id (the batch's last seq), through Redis
  pub/sub to every web process when EVENTSTREAM_REDIS is set, else to this process's listeners.
- ``LogStorage`` (EVENTSTREAM_STORAGE_CLASS) answers replay for ``job-<id>`` channels from
  ``LogEntry`` (or the archive), so a reconnect with Last-Event-ID, or a listener that overflowed
  its 10 pending events, resumes from the seq it last got. Other channels use DjangoModelStorage.
- ``sequenced`` wraps a stream's bytes: whatever the library re-reads or the fan-out reorders,
  the client gets each seq exactly once, in order, and the stream closes after ``end``.
"""

import asyncio
import json
import logging
import re
import weakref
from collections.abc import AsyncIterator, Callable, Hashable

from asgiref.sync import sync_to_async
from django.conf import settings
from django_eventstream.event import Event
from django_eventstream.storage import DjangoModelStorage, StorageBase
from django_eventstream.utils import make_id, sse_encode_event

from finetune_studio.events import job_channel
from finetune_studio.streaming import release_connection

logger = logging.getLogger(__name__)

_LIBRARY_REDIS_CHANNEL = "events_channel"  # hard-coded in django-eventstream 5.3 (sender and listeners)
_JOB_CHANNEL = re.compile(r"^job-(\d+)$")


def tune_listeners() -> None:
    """Two changes to django-eventstream's in-process fan-out, which cost 1,000 streams most of a core.

    - Each open stream may queue LOG_STREAM_LISTENER_PENDING events instead of 10. A listener past
      its limit is flagged "overflow" and re-reads from storage (three queries through a thread):
      at 20 events/s any stream scheduled half a second late overflowed, and the re-reads made
      the next ones later still (p99 24 s). Queued events are shared objects, one list slot each,
      and a late stream sends everything it has in one write.
    - Waking a listener from its own event loop (the Redis subscriber runs there) sets its
      ``asyncio.Event`` directly; ``call_soon_threadsafe`` wrote to the loop's self-pipe once per
      listener per event. Wakes from other threads (standalone mode's worker) still go through it.
    """
    from importlib.metadata import version

    from django_eventstream import views

    views.MAX_PENDING = max(views.MAX_PENDING, settings.LOG_STREAM_LISTENER_PENDING)
    views.Listener.wake_threadsafe = _wake_listener
    # ``lean_stream`` follows this version's ``stream`` line by line; another version keeps its own.
    if version("django-eventstream").startswith("5.3."):
        views.stream = lean_stream
    else:
        logger.warning(
            "django-eventstream %s: its own stream loop is kept (lean_stream follows 5.3)",
            version("django-eventstream"),
        )


def _wake_listener(listener) -> None:
    try:
        on_its_loop = asyncio.get_running_loop() is listener.loop
    except RuntimeError:
        on_its_loop = False
    if on_its_loop:
        listener.aevent.set()
    else:
        listener.loop.call_soon_threadsafe(listener.aevent.set)


_KEEP_ALIVE_SECONDS = 20
_PADDING = ":" + " " * 2048 + "\n\n"


async def lean_stream(event_request, listener) -> AsyncIterator[str]:
    """django-eventstream 5.3's ``views.stream`` with the same protocol and less work per event.

    The library's loop creates a task, a waiter and a 20 s timer (``asyncio.wait``) every time a
    listener waits for its next event, and builds each body by string concatenation: at 1,000
    streams × 20 events/s that was the larger part of the web process's CPU. Here a listener
    waits on its event under ``asyncio.timeout`` (no task), bodies are joined once, and reading
    from storage (first read, ``more``, overflow, items queued during a read) is unchanged.
    """
    from django_eventstream.eventstream import EventPermissionError, get_events
    from django_eventstream.utils import make_id, sse_encode_error, sse_encode_event
    from django_eventstream.views import get_listener_manager

    read_events = sync_to_async(get_events)
    listener.assign_loop()
    manager = get_listener_manager()
    manager.add_listener(listener)
    try:
        first = True
        while True:
            try:
                response = await read_events(event_request)
            except EventPermissionError as exc:
                yield sse_encode_error("forbidden", str(exc), extra={"channels": exc.channels})
                return
            last_ids = dict(response.channel_last_ids)
            body = []
            if first:
                first = False
                body.append(_PADDING + "event: stream-open\ndata:\n\n")
            if response.channel_reset:
                reset = {"channels": list(response.channel_reset)}
                body.append(sse_encode_event("stream-reset", reset, event_id=make_id(last_ids), json_encode=True))
            for channel, items in response.channel_items.items():
                for item in items:
                    last_ids[channel] = item.id
                    body.append(sse_encode_event(item.type, item.data, event_id=make_id(last_ids)))
            yield "".join(body)
            if response.channel_more:
                continue
            with manager.lock:
                # Items queued while reading from storage: drop them and read again (as the library does).
                conflict = bool(listener.channel_items)
                if conflict:
                    listener.aevent.clear()
                    listener.channel_items = {}
            if conflict:
                continue
            while True:  # caught up: live events
                if not listener.aevent.is_set():
                    try:
                        async with asyncio.timeout(_KEEP_ALIVE_SECONDS):
                            await listener.aevent.wait()
                    except TimeoutError:
                        yield "event: keep-alive\ndata:\n\n"
                        continue
                with manager.lock:
                    channel_items, overflow, error = listener.channel_items, listener.overflow, listener.error
                    listener.aevent.clear()
                    listener.channel_items = {}
                    listener.overflow = False
                body = []
                for channel, items in channel_items.items():
                    for item in items:
                        if channel in last_ids:
                            if item.id is not None:
                                last_ids[channel] = item.id
                            else:
                                del last_ids[channel]
                        body.append(_encoded(item, last_ids))
                if error:
                    # Kicked (access lost): say so, then read again, where the permission check ends the stream.
                    body.append(sse_encode_error(error["condition"], error["text"], extra=error.get("extra")))
                    yield "".join(body)
                    break
                if body:
                    yield "".join(body)
                if overflow:
                    break  # past the queue's limit: read the rest from storage
            event_request.channel_last_ids = last_ids
    finally:
        listener.aevent.set()
        manager.remove_listener(listener)


def _encoded(item, last_ids: dict) -> str:
    """An event's SSE text with this stream's id; encoded once for all the streams that share it.

    Every listener of a channel is handed the same ``Event`` object and, caught up, the same
    position: 1,000 streams cost one encoding (three regular expressions and a URL quote) instead of 1,000.
    """
    from django_eventstream.utils import make_id, sse_encode_event

    key = tuple(last_ids.items())
    cached = getattr(item, "_studio_sse", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    text = sse_encode_event(item.type, item.data, event_id=make_id(last_ids) if last_ids else None)
    item._studio_sse = (key, text)
    return text


def channel_job_id(channel: str) -> int | None:
    match = _JOB_CHANNEL.match(channel)
    return int(match[1]) if match else None


def publish_log_event(job_id: int, event_type: str, payload: str, event_id: int) -> None:
    """Send an already-encoded event on ``job-<id>`` with the given id (no storage write: the rows are it).

    A failed fan-out is logged, not raised: the lines are committed and clients catch up by replay.
    """
    from django_eventstream import eventstream
    from django_eventstream.views import get_listener_manager

    channel = job_channel(job_id)
    try:
        if eventstream.redis_client is not None:
            message = {"channel": channel, "event_type": event_type, "data": payload, "pub_id": str(event_id)}
            eventstream.redis_client.publish(_LIBRARY_REDIS_CHANNEL, json.dumps(message))
        else:
            get_listener_manager().add_to_queues(channel, Event(channel, event_type, payload, id=event_id))
    except Exception:
        logger.exception(
            "Publishing %s #%s on %s failed; clients will catch up by replay", event_type, event_id, channel
        )


class LogStorage(StorageBase):
    """Event storage where a ``job-<id>`` channel's events are its log lines, ids their seqs."""

    def __init__(self) -> None:
        self._other_channels = DjangoModelStorage()

    def append_event(self, channel, event_type, data):
        job_id = channel_job_id(channel)
        if job_id is None:
            return self._other_channels.append_event(channel, event_type, data)
        # Sent through send_event (not publish_log_event): nothing to store, the position is the last seq.
        return Event(channel, event_type, data, id=self._current_id(job_id))

    def get_events(self, channel, last_id, limit=100):
        # Called from open streams (replay, overflow): each call gives its connection back when done.
        try:
            job_id = channel_job_id(channel)
            if job_id is None:
                return self._other_channels.get_events(channel, last_id, limit=limit)
            return log_events_after(job_id, int(last_id), max_events=limit)
        finally:
            release_connection()

    def get_current_id(self, channel):
        try:
            job_id = channel_job_id(channel)
            if job_id is None:
                return self._other_channels.get_current_id(channel)
            return self._current_id(job_id)
        finally:
            release_connection()

    @staticmethod
    def _current_id(job_id: int) -> int:
        from .selectors import log_stream_of

        stream = log_stream_of(job_id)
        return stream.last_seq if stream else 0


def log_events_after(job_id: int, after: int, *, max_events: int = 100, upto: int | None = None) -> list[Event]:
    """Replay: the lines after ``after`` as ``logs`` events of LOG_STREAM_EVENT_LINES lines each.

    When everything is returned and the job has finished, a final ``end`` event follows.
    django-eventstream asks for ``limit + 1`` events to learn whether more remain, so a full
    answer carries exactly ``max_events`` events and the library reads again after them.
    """
    from jobs.models import Job

    from .selectors import log_lines, log_stream_of, serialize_line
    from .services import encode_logs_event

    channel = job_channel(job_id)
    per_event = settings.LOG_STREAM_EVENT_LINES
    stream = log_stream_of(job_id)
    wanted = max_events * per_event
    lines = log_lines(job_id, after=after, limit=wanted, stream=stream)
    if upto is not None:
        lines = [line for line in lines if line["seq"] <= upto]
    totals = None
    if stream is not None:
        totals = {"line_count": stream.line_count, "warn_count": stream.warn_count, "error_count": stream.error_count}
    events = []
    previous = after
    for start in range(0, len(lines), per_event):
        chunk = [serialize_line(line) for line in lines[start : start + per_event]]
        events.append(Event(channel, "logs", encode_logs_event(previous, chunk, totals), id=chunk[-1]["seq"]))
        previous = chunk[-1]["seq"]
    if len(lines) < wanted and upto is None:
        status = Job.objects.filter(id=job_id).values_list("status", flat=True).first()
        if status in Job.FINISHED:
            events.append(Event(channel, "end", json.dumps({"status": status, "last_seq": previous}), id=previous))
    return events


# --- Exactly-once, in-order delivery over the library's stream ------------------------------------

_EVENT_TYPE = re.compile(rb"^event: ([^\n]*)$", re.MULTILINE)
_LOGS_RANGE = re.compile(rb'^data: \{"prev_seq":(\d+),"last_seq":(\d+)[,}]', re.MULTILINE)
_END_LAST = re.compile(rb'"last_seq": ?(\d+)')


async def sequenced(chunks: AsyncIterator[bytes], *, job_id: int, start: int) -> AsyncIterator[bytes]:
    """Pass the stream through, keeping for the client a strictly increasing, gap-free run of seqs.

    django-eventstream may send a replayed event twice (items queued during its first read
    make it read again from the start) and live batches of concurrent writers may arrive out
    of order. Each ``logs`` event says which seqs it covers (prev_seq, last_seq]: an event
    already covered is dropped, an overlap is trimmed, a gap is filled from the table first.
    After an ``end`` event the stream closes, so ``curl -N`` returns.
    """
    sent = start
    async for chunk in chunks:
        out: list[bytes] = []
        ended = False
        for block in chunk.split(b"\n\n"):
            if not block:
                continue
            kind = _EVENT_TYPE.search(block)
            kind = kind[1] if kind else b""
            if kind == b"logs":
                covered = _LOGS_RANGE.search(block)
                if covered:
                    previous, last = int(covered[1]), int(covered[2])
                    if last <= sent:
                        continue
                    if previous > sent:
                        out.append(await sync_to_async(_replay_blocks)(job_id, sent, previous))
                    elif previous < sent:
                        block = _trim_block(block, job_id, sent)
                    sent = last
            elif kind == b"end":
                last = _END_LAST.search(block)
                if last and int(last[1]) > sent:
                    out.append(await sync_to_async(_replay_blocks)(job_id, sent, int(last[1])))
                    sent = int(last[1])
                ended = True
            out.append(block + b"\n\n")
            if ended:
                break
        if out:
            yield b"".join(out)
        if ended:
            return


def _replay_blocks(job_id: int, after: int, upto: int) -> bytes:
    try:
        return _replay_range(job_id, after, upto)
    finally:
        release_connection()


def _replay_range(job_id: int, after: int, upto: int) -> bytes:
    out = []
    while after < upto:
        events = [event for event in log_events_after(job_id, after, upto=upto) if event.type == "logs"]
        if not events:
            break
        for event in events:
            out.append(_encode(job_id, event.type, event.data, event.id))
        after = events[-1].id
    return b"".join(out)


def _trim_block(block: bytes, job_id: int, sent: int) -> bytes:
    data_line = next(line for line in block.split(b"\n") if line.startswith(b"data: "))
    body = json.loads(data_line[len(b"data: ") :])
    trimmed = {"prev_seq": sent, **{key: value for key, value in body.items() if key != "prev_seq"}}
    trimmed["lines"] = [line for line in body["lines"] if line["seq"] > sent]
    encoded = json.dumps(trimmed, separators=(",", ":"))
    return _encode(job_id, "logs", encoded, body["last_seq"]).rstrip(b"\n")


def _encode(job_id: int, event_type: str, data: str, event_id: int) -> bytes:
    return sse_encode_event(event_type, data, event_id=make_id({job_channel(job_id): event_id})).encode()


# --- Access re-checked while a stream is open ---------------------------------------------------


async def while_authorized(
    chunks: AsyncIterator[bytes],
    *,
    still_allowed: Callable[[], bool],
    interval: float,
    grant: Hashable | None = None,
) -> AsyncIterator[bytes]:
    """Pass the stream through while ``still_allowed()`` holds, checked every ``interval`` seconds.

    A stream is authorized once, when it opens; without this a revoked token (or a logged-out
    session, or a job moved away from the user) would keep receiving lines for hours. The check
    runs on a timer, so an idle stream ends too, and reads the database, so it works across web
    processes. One timer per process checks every open stream, and streams opened with the same
    ``grant`` (user, token or session, job) share one check: a per-stream timer and a task per
    chunk cost 1,000 streams at 20 events/s most of a core (bench/bench_logs_stream.py). A
    revoked stream's task is cancelled, so it ends even while waiting for lines.
    """
    task = asyncio.current_task()
    watch = _AccessWatch.of(asyncio.get_running_loop(), interval)
    key = grant if grant is not None else task
    watch.add(key, still_allowed, task)
    try:
        async for chunk in chunks:
            yield chunk
    except asyncio.CancelledError:
        if task not in watch.revoked:
            raise
        task.uncancel()
        logger.info("Closing a log stream: access was revoked")
    finally:
        watch.discard(key, task)
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


class _AccessWatch:
    """The open streams of one event loop whose access is re-checked every ``interval`` seconds."""

    _by_loop: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, _AccessWatch]]" = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.grants: dict[Hashable, tuple[Callable[[], bool], set[asyncio.Task]]] = {}
        self.revoked: weakref.WeakSet[asyncio.Task] = weakref.WeakSet()
        self.timer: asyncio.Task | None = None

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop, interval: float) -> "_AccessWatch":
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
            verdicts = await sync_to_async(_run_checks, thread_sensitive=False)(checks)
            for key, allowed in verdicts.items():
                entry = self.grants.get(key)
                if allowed or entry is None:
                    continue
                for task in list(entry[1]):
                    self.revoked.add(task)
                    task.cancel()


def _run_checks(checks: dict[Hashable, Callable[[], bool]]) -> dict[Hashable, bool]:
    """Each grant's verdict; a check that fails (database down) closes its streams, as a refusal would."""
    verdicts = {}
    try:
        for key, still_allowed in checks.items():
            try:
                verdicts[key] = bool(still_allowed())
            except Exception:
                logger.exception("Re-checking a log stream's access failed; closing it")
                verdicts[key] = False
    finally:
        release_connection()
    return verdicts
