"""The live log stream on django-eventstream, backed by the log table itself.

- ``publish_log_event`` sends a batch with its own id (the batch's last seq), through Redis
  pub/sub to every web process when EVENTSTREAM_REDIS is set, else to this process's listeners.
- ``LogStorage`` (EVENTSTREAM_STORAGE_CLASS) answers replay for ``job-<id>`` channels from
  ``LogEntry`` (or the archive), so a reconnect with Last-Event-ID, or a listener that overflowed
  its 10 pending events, resumes from the seq it last got. Other channels use DjangoModelStorage.
- ``sequenced`` wraps a stream's bytes: whatever the library re-reads or the fan-out reorders,
  the client gets each seq exactly once, in order, and the stream closes after ``end``.
"""

import json
import logging
import re
from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.conf import settings
from django_eventstream.event import Event
from django_eventstream.storage import DjangoModelStorage, StorageBase
from django_eventstream.utils import make_id, sse_encode_event

from finetune_studio.events import job_channel

logger = logging.getLogger(__name__)

_LIBRARY_REDIS_CHANNEL = "events_channel"  # hard-coded in django-eventstream 5.3 (sender and listeners)
_JOB_CHANNEL = re.compile(r"^job-(\d+)$")


def release_connection() -> None:
    """Give the request thread's database connection back to the pool while a stream stays open.

    Under ASGI each request keeps its own thread, and its connection until the response ends:
    for SSE, hours. Without this, every open stream would hold a pooled connection (PoolTimeout
    after DB_POOL_MAX_SIZE streams). The next query simply takes a connection again.
    """
    from django.db import connection

    if not connection.in_atomic_block:
        connection.close()


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
