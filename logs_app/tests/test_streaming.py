"""The stream in-process: storage-backed replay, overflow, reconnects, the sequencer, the end."""

import asyncio
import json

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.test import AsyncClient

from finetune_studio.events import job_channel
from logs_app.services import encode_logs_event, log_lines_append, log_stream_end
from logs_app.streaming import LogStorage, sequenced

from .sse import SseParser, log_seqs


def append_batches(job_id: int, batches: int, size: int) -> None:
    for _ in range(batches):
        log_lines_append(job_id=job_id, lines=[{"message": "x"}] * size)


class Stream:
    """One SSE connection through Django's ASGI request path (AsyncClient), read event by event."""

    def __init__(self, response):
        self.response = response
        self.chunks = response.streaming_content.__aiter__()
        self.parser = SseParser()
        self.events = []
        self.closed = False

    async def read_until(self, predicate, timeout=10.0):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate(self.events):
            try:
                chunk = await asyncio.wait_for(self.chunks.__anext__(), deadline - loop.time())
            except StopAsyncIteration:
                self.closed = True
                return
            self.events.extend(self.parser.feed(chunk))

    async def close(self):
        await self.chunks.aclose()


async def open_stream(user, job_id, **headers):
    client = AsyncClient()
    await client.aforce_login(user)
    query = headers.pop("query", "")
    response = await client.get(
        f"/api/v1/jobs/{job_id}/logs{query}", headers={"accept": "text/event-stream", **headers}
    )
    assert response.status_code == 200, response.status_code
    return Stream(response)


def reached(seq):
    return lambda events: any(event.id and event.id.endswith(f":{seq}") for event in events)


def test_storage_replays_the_log_table_with_seqs_as_event_ids(job, settings):
    settings.LOG_STREAM_EVENT_LINES = 4
    append_batches(job.id, 1, 10)
    storage = LogStorage()
    channel = job_channel(job.id)
    assert storage.get_current_id(channel) == 10
    events = storage.get_events(channel, 3, limit=101)
    assert [event.id for event in events] == [7, 10]
    assert [json.loads(event.data)["prev_seq"] for event in events] == [3, 7]
    # A full answer (limit events) tells django-eventstream to read again after it.
    assert [event.id for event in storage.get_events(channel, 0, limit=2)] == [4, 8]
    assert storage.get_events(channel, 10, limit=101) == []


def test_storage_ends_a_finished_jobs_replay_with_an_end_event(make_job, alice):
    finished = make_job(alice, status="succeeded")
    append_batches(finished.id, 1, 3)
    events = LogStorage().get_events(job_channel(finished.id), 0, limit=101)
    assert [(event.type, event.id) for event in events] == [("logs", 3), ("end", 3)]
    assert json.loads(events[-1].data) == {"status": "succeeded", "last_seq": 3}


def test_open_streams_queue_many_events_before_re_reading_the_table(settings):
    from django_eventstream import views as es_views

    assert es_views.MAX_PENDING == settings.LOG_STREAM_LISTENER_PENDING >= 1000


def test_other_channels_keep_the_default_storage(db):
    from django_eventstream import send_event

    send_event("user-42", "job", {"id": 1})
    storage = LogStorage()
    assert storage.get_current_id("user-42") >= 1


@pytest.mark.postgres
def test_every_line_arrives_once_in_order_across_overflow_reconnects_and_the_end(
    transactional_db, make_job, alice, monkeypatch
):
    from django_eventstream import views as es_views

    # The library's own queue length (tune_listeners raises it): overflow must happen here.
    monkeypatch.setattr(es_views, "MAX_PENDING", 10)
    job = make_job(alice)

    async def scenario():
        stream = await open_stream(alice, job.id, query="?backlog=0")
        await stream.read_until(lambda events: any(event.type == "stream-open" for event in events))
        # 60 batches while the client reads nothing: far past django-eventstream's 10 pending events.
        await sync_to_async(append_batches)(job.id, 60, 5)
        await stream.read_until(reached(300))
        first = log_seqs(stream.events)
        assert first == list(range(1, 301))
        last_id = [event.id for event in stream.events if event.id][-1]
        assert last_id == f"job-{job.id}:300"
        await stream.close()

        # Lines written while disconnected come back on reconnect (Last-Event-ID), then live ones.
        await sync_to_async(append_batches)(job.id, 20, 5)
        again = await open_stream(alice, job.id, last_event_id=last_id)
        await again.read_until(reached(400))
        # Caught up and waiting: 30 more batches overflow the listener's queue (10): replay fills in.
        await sync_to_async(append_batches)(job.id, 30, 2)
        await again.read_until(reached(460))
        assert log_seqs(again.events) == list(range(301, 461))
        await again.close()

        # ?after= works as well, and the end of the job closes the stream after the last line.
        third = await open_stream(alice, job.id, query="?after=455")
        await third.read_until(reached(460))

        def finish():
            from django.utils import timezone

            from jobs.models import Job

            Job.objects.filter(id=job.id).update(status="succeeded", finished_at=timezone.now())
            log_lines_append(job_id=job.id, lines=["last words"])
            log_stream_end(job_id=job.id, status="succeeded")

        await sync_to_async(finish)()
        await third.read_until(lambda events: third.closed, timeout=10)
        assert log_seqs(third.events) == list(range(456, 462))
        assert third.events[-1].type == "end" and third.events[-1].json == {"status": "succeeded", "last_seq": 461}
        assert third.closed

    async_to_sync(scenario)()


@pytest.mark.postgres
def test_a_new_client_gets_the_last_lines_then_live_ones(transactional_db, make_job, alice, settings):
    settings.LOG_STREAM_BACKLOG = 50
    job = make_job(alice)
    append_batches(job.id, 1, 120)

    async def scenario():
        stream = await open_stream(alice, job.id)
        await stream.read_until(reached(120))
        await sync_to_async(append_batches)(job.id, 1, 3)
        await stream.read_until(reached(123))
        await stream.close()
        return log_seqs(stream.events)

    assert async_to_sync(scenario)() == list(range(71, 124))


def _block(job_id, previous, seqs):
    lines = [
        {"seq": seq, "timestamp": "2024-01-01T00:00:00+00:00", "level": "INFO", "message": f"m{seq}"} for seq in seqs
    ]
    data = encode_logs_event(previous, lines, None)
    return f"event: logs\nid: job-{job_id}:{seqs[-1]}\ndata: {data}\n\n".encode()


def test_the_sequencer_drops_repeats_trims_overlaps_and_fills_gaps_from_the_table(job):
    append_batches(job.id, 1, 12)

    async def chunks():
        yield b":" + b" " * 2048 + b"\n\nevent: stream-open\ndata:\n\n"
        yield _block(job.id, 0, [1, 2, 3])
        yield _block(job.id, 0, [1, 2, 3]) + _block(job.id, 3, [4, 5])  # the library's re-read after a conflict
        yield _block(job.id, 4, [5, 6])  # overlaps what was sent
        yield _block(job.id, 9, [10, 11])  # a batch published before the one covering 7..9
        yield _block(job.id, 6, [7, 8, 9])  # ...which then arrives late
        yield b"event: keep-alive\ndata:\n\n"
        yield b'event: end\nid: job-1:12\ndata: {"status": "failed", "last_seq": 12}\n\n'
        yield _block(job.id, 12, [13])  # never read: the stream is over

    async def collect():
        parser = SseParser()
        events = []
        async for chunk in sequenced(chunks(), job_id=job.id, start=0):
            events.extend(parser.feed(chunk))
        return events

    events = async_to_sync(collect)()
    assert log_seqs(events) == list(range(1, 13))
    assert [event.type for event in events][:2] == ["stream-open", "logs"]
    assert events[-1].type == "end"
    assert "keep-alive" in [event.type for event in events]
