"""The stream in-process: replay from the table, overflow, reconnects, batches out of order or lost, the end."""

import asyncio
import json

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.test import AsyncClient

from logs_app.events import publish_log_event
from logs_app.services import encode_logs_event, log_lines_append, log_stream_end
from logs_app.streaming import JobFeed, Replay, replay_page

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


def replayed(page):
    return SseParser().feed(page.body)


def test_replay_reads_the_log_table_as_events_whose_ids_are_seqs(job, settings):
    settings.LOG_STREAM_EVENT_LINES = 4
    append_batches(job.id, 1, 10)
    page = replay_page(job.id, 3)
    events = replayed(page)
    assert [event.id for event in events] == [f"job-{job.id}:7", f"job-{job.id}:10"]
    assert [event.json["prev_seq"] for event in events] == [3, 7]
    assert log_seqs(events) == list(range(4, 11))
    assert (page.sent, page.done, page.ended) == (10, True, False)
    assert replay_page(job.id, 10) == Replay(b"", 10, True, False)


def test_replay_reads_in_pages_and_stops_where_asked(job, settings):
    settings.LOG_STREAM_EVENT_LINES = 2
    settings.LOG_STREAM_REPLAY_EVENTS = 2
    append_batches(job.id, 1, 9)
    first = replay_page(job.id, 0)
    assert (log_seqs(replayed(first)), first.sent, first.done) == ([1, 2, 3, 4], 4, False)
    rest = replay_page(job.id, 8)
    assert (log_seqs(replayed(rest)), rest.sent, rest.done) == ([9], 9, True)
    gap = replay_page(job.id, 4, upto=6)
    assert (log_seqs(replayed(gap)), gap.sent, gap.done) == ([5, 6], 6, True)


def test_replay_ends_a_finished_jobs_log_with_an_end_event(make_job, alice):
    finished = make_job(alice, status="succeeded")
    append_batches(finished.id, 1, 3)
    page = replay_page(finished.id, 0)
    events = replayed(page)
    assert [(event.type, event.id) for event in events] == [("logs", f"job-{finished.id}:3")] * 1 + [
        ("end", f"job-{finished.id}:3")
    ]
    assert events[-1].json == {"status": "succeeded", "last_seq": 3}
    assert page.ended
    # A read bounded by ``upto`` (a gap being filled) never ends the stream.
    assert not replay_page(finished.id, 0, upto=3).ended


def test_open_streams_queue_many_events_before_re_reading_the_table(settings):
    from django_eventstream import views as es_views

    assert es_views.MAX_PENDING == settings.LOG_STREAM_LISTENER_PENDING >= 1000


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


def _publish(job_id, previous, seqs):
    """A live ``logs`` event as the writer publishes it (the rows must be in the table already)."""
    lines = [{"seq": seq, "timestamp": "2024-01-01T00:00:00+00:00", "level": "INFO", "message": "x"} for seq in seqs]
    publish_log_event(job_id, "logs", encode_logs_event(previous, lines, None), seqs[-1])


def _store_without_events(job_id, seqs):
    """Lines in the table whose live events never left: what a writer whose fan-out failed leaves behind."""
    from django.utils import timezone

    from logs_app.models import LogEntry, LogStream

    now = timezone.now()
    LogEntry.objects.bulk_create([LogEntry(job_id=job_id, seq=seq, timestamp=now, message="x") for seq in seqs])
    LogStream.objects.filter(job_id=job_id).update(last_seq=seqs[-1], line_count=seqs[-1])


@pytest.mark.postgres
def test_live_batches_out_of_order_repeated_or_lost_still_reach_the_client_once_in_order(
    transactional_db, make_job, alice
):
    job = make_job(alice)

    async def scenario():
        stream = await open_stream(alice, job.id, query="?after=0")
        await sync_to_async(append_batches)(job.id, 1, 1)
        await stream.read_until(reached(1))  # the stream is live now
        # Lines 2..12 are written without their events; then the events come as a fan-out may deliver them.
        await sync_to_async(_store_without_events)(job.id, list(range(2, 13)))
        await sync_to_async(_publish)(job.id, 1, [2, 3])
        await sync_to_async(_publish)(job.id, 1, [2, 3])  # published twice
        await sync_to_async(_publish)(job.id, 9, [10, 11])  # overtook the batch of 4..9
        await sync_to_async(_publish)(job.id, 3, [4, 5, 6, 7, 8, 9])  # ...which arrives late
        await stream.read_until(reached(11))
        # Seq 12's event is lost: after Redis comes back (or when the stream is idle) the feed reads the table.
        JobFeed.catch_up_everywhere()
        await stream.read_until(reached(12))
        await stream.close()
        return stream.events

    events = async_to_sync(scenario)()
    assert log_seqs(events) == list(range(1, 13))
    assert [event.id for event in events if event.type == "logs"] == [f"job-{job.id}:{seq}" for seq in (1, 3, 11, 12)]


@pytest.mark.postgres
def test_an_idle_stream_gets_keep_alives_and_sees_a_lost_end(transactional_db, make_job, alice, settings):
    settings.LOG_STREAM_KEEP_ALIVE_SECONDS = 1
    job = make_job(alice)
    append_batches(job.id, 1, 2)

    async def scenario():
        stream = await open_stream(alice, job.id, query="?after=0")
        await stream.read_until(reached(2))
        await stream.read_until(lambda events: events[-1].type == "keep-alive", timeout=3)
        from django.utils import timezone

        from jobs.models import Job

        # Finished without log_stream_end (its event lost on the way): the next idle check sees it.
        await Job.objects.filter(id=job.id).aupdate(status="failed", finished_at=timezone.now())
        await stream.read_until(lambda events: stream.closed, timeout=5)
        return stream

    stream = async_to_sync(scenario)()
    assert stream.closed and stream.events[-1].type == "end"
    assert stream.events[-1].json == {"status": "failed", "last_seq": 2}


def test_a_malformed_message_on_the_events_channel_is_ignored_with_a_warning(listen, caplog, settings):
    from django_eventstream.views import get_listener_manager

    from finetune_studio.eventstream_patches import _deliver

    settings.EVENTS_REDIS_CHANNEL = "finetune-studio:test:events"
    listener = listen("job-7")
    for raw in (b"not json", b'{"channel": "job-7"}', b"[1, 2]"):
        _deliver(get_listener_manager(), raw)
    _deliver(get_listener_manager(), b'{"channel": "job-7", "event_type": "end", "data": "{}", "pub_id": "3"}')
    assert [(event.type, event.id) for event in listener.events()] == [("end", "3")]
    assert caplog.text.count("malformed message") == 3


@pytest.mark.redis
def test_the_redis_subscription_outlives_garbage_collections(redis_url, settings, listen):
    """django-eventstream starts the subscriber as a task nobody holds; a collection once ended it mid-run."""
    import gc

    import redis
    from django_eventstream.views import get_listener_manager

    from finetune_studio.eventstream_patches import _supervised_redis_listener

    settings.EVENTSTREAM_REDIS = {"host": "127.0.0.1", "port": 6379, "db": int(redis_url.rsplit("/", 1)[1])}
    settings.EVENTS_REDIS_CHANNEL = f"finetune-studio:test-{id(settings)}:events"
    listener = listen("job-9")
    publisher = redis.Redis.from_url(redis_url)

    async def scenario():
        asyncio.get_running_loop().create_task(_supervised_redis_listener(get_listener_manager()))  # not kept
        for _ in range(50):
            if publisher.pubsub_numsub(settings.EVENTS_REDIS_CHANNEL)[0][1]:
                break
            await asyncio.sleep(0.05)
        gc.collect()
        message = {"channel": "job-9", "event_type": "end", "data": "{}", "pub_id": "4"}
        publisher.publish(settings.EVENTS_REDIS_CHANNEL, json.dumps(message))
        for _ in range(50):
            if listener.events():
                break
            await asyncio.sleep(0.05)
        for task in asyncio.all_tasks() - {asyncio.current_task()}:
            task.cancel()

    asyncio.run(scenario())
    assert [(event.type, event.id) for event in listener.events()] == [("end", "4")]


@pytest.mark.postgres
def test_a_stream_left_behind_by_its_feed_reads_what_it_missed_from_the_table(
    transactional_db, make_job, alice, monkeypatch
):
    from logs_app import streaming

    monkeypatch.setattr(streaming, "_FEED_KEPT_BATCHES", 3)
    monkeypatch.setattr(streaming, "_FEED_KEPT_BYTES", 2000)
    job = make_job(alice)

    async def scenario():
        slow = await open_stream(alice, job.id, query="?after=0")
        await sync_to_async(append_batches)(job.id, 1, 1)
        await slow.read_until(reached(1))
        # 40 batches while this client reads nothing: the feed keeps only the last few.
        await sync_to_async(append_batches)(job.id, 40, 3)
        feed = streaming.JobFeed._by_loop[asyncio.get_running_loop()][job.id]
        assert feed.base > 0 and len(feed.batches) <= 6 and feed.kept_bytes <= 4000
        await slow.read_until(reached(121))
        await slow.close()
        return log_seqs(slow.events)

    assert async_to_sync(scenario)() == list(range(1, 122))
