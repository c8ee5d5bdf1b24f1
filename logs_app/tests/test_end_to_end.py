"""Real processes: uvicorn web servers, an emitting process, Redis fan-out, an SSE client over HTTP."""

import asyncio
import subprocess
import sys

import httpx
import pytest

from tests.support.processes import ROOT, asgi_server, service_env

from .sse import SseParser, log_seqs


def token_for(user) -> str:
    from rest_framework.authtoken.models import Token

    return Token.objects.get_or_create(user=user)[0].key


async def read_stream(client, url, token, until, *, headers=None, timeout=20.0, opened: asyncio.Event | None = None):
    """Read SSE events until ``until(events)`` or the server closes the stream.

    ``opened`` is set on the stream's ``stream-open`` event: the server has joined the job's feed by then,
    so a line committed afterwards reaches this stream (the readiness probe, instead of a fixed sleep).
    """
    parser = SseParser()
    events = []
    request_headers = {"Authorization": f"Token {token}", "Accept": "text/event-stream", **(headers or {})}
    async with client.stream("GET", url, headers=request_headers, timeout=timeout) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for chunk in response.aiter_bytes():
            events.extend(parser.feed(chunk))
            if opened is not None and any(event.type == "stream-open" for event in events):
                opened.set()
            if until(events):
                break
    return events


async def opened_and_subscribed(opened: list[asyncio.Event], redis_url: str, *, processes: int, timeout=10.0) -> None:
    """Wait until every stream is open and ``processes`` web processes hold their Redis subscription."""
    import redis

    await asyncio.wait_for(asyncio.gather(*(event.wait() for event in opened)), timeout)
    server = redis.Redis.from_url(redis_url)
    database = str(server.connection_pool.connection_kwargs.get("db", 0))
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        clients = await asyncio.to_thread(server.client_list, _type="pubsub")
        ours = [c for c in clients if c.get("name") == "finetune-studio-events" and str(c.get("db")) == database]
        if len(ours) >= processes:
            return
        assert asyncio.get_running_loop().time() < deadline, f"{len(ours)} of {processes} processes subscribed"
        await asyncio.sleep(0.05)


def reached(job_id: int, seq: int):
    """``until`` for read_stream: an event with this seq as its id has arrived."""
    return lambda events: f"job-{job_id}:{seq}" in [event.id for event in events]


def emit(env: dict, job_id: int, batches: int, size: int) -> None:
    """Another process writes lines the way the local runner does (log_lines_append)."""
    code = (
        "from logs_app.services import log_lines_append\n"
        f"for b in range({batches}):\n"
        f"    lines = [{{'message': f'batch {{b}} line {{n}}'}} for n in range({size})]\n"
        f"    log_lines_append(job_id={job_id}, lines=lines)\n"
    )
    subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, env=env, check=True, timeout=60)


@pytest.mark.slow
def test_curl_like_client_gets_the_backlog_and_the_end_of_a_finished_job(
    transactional_db, make_job, alice, bob, tmp_path
):
    from logs_app.services import log_lines_append

    job = make_job(alice, status="succeeded")
    log_lines_append(job_id=job.id, lines=[{"message": f"line {n}"} for n in range(30)])
    alice_token, bob_token = token_for(alice), token_for(bob)
    with asgi_server(env=service_env(VAR_DIR=str(tmp_path / "var")), log_path=tmp_path / "web.log") as base:
        url = f"{base}/api/v1/jobs/{job.id}/logs"

        async def scenario():
            async with httpx.AsyncClient() as client:
                assert (await client.get(url, headers={"Accept": "text/event-stream"})).status_code == 401
                other = await client.get(url, headers={"Authorization": f"Token {bob_token}"})
                assert other.status_code == 404
                # No `until`: the server itself closes the stream after `end`, as `curl -N` would see.
                events = await read_stream(client, url, alice_token, until=lambda events: False)
                text = await client.get(f"{url}.txt", headers={"Authorization": f"Token {alice_token}"})
                return events, text

        events, text = asyncio.run(scenario())
    assert log_seqs(events) == list(range(1, 31))
    assert events[0].type == "stream-open" and events[-1].type == "end"
    assert events[-1].id == f"job-{job.id}:30"
    assert text.status_code == 200 and text.text.count("\n") == 30 and "[INFO] line 29" in text.text


@pytest.mark.slow
@pytest.mark.redis
def test_two_web_processes_both_deliver_every_line_published_by_a_third(
    transactional_db, make_job, alice, redis_url, tmp_path
):
    job = make_job(alice)
    token = token_for(alice)
    env = service_env(redis_url=redis_url)
    with (
        asgi_server(env=env, log_path=tmp_path / "web1.log") as first,
        asgi_server(env=env, log_path=tmp_path / "web2.log") as second,
    ):

        async def scenario():
            async with httpx.AsyncClient() as client:
                opened = [asyncio.Event(), asyncio.Event()]
                readers = [
                    asyncio.create_task(
                        read_stream(
                            client, f"{base}/api/v1/jobs/{job.id}/logs", token, reached(job.id, 200), opened=ready
                        )
                    )
                    for base, ready in zip((first, second), opened, strict=True)
                ]
                await opened_and_subscribed(opened, redis_url, processes=2)
                await asyncio.to_thread(emit, env, job.id, 20, 10)
                events = await asyncio.gather(*readers)
                # A client that dropped after seq 200 resumes on the *other* process with Last-Event-ID.
                await asyncio.to_thread(emit, env, job.id, 5, 10)
                resumed = await read_stream(
                    client,
                    f"{second}/api/v1/jobs/{job.id}/logs",
                    token,
                    reached(job.id, 250),
                    headers={"Last-Event-ID": f"job-{job.id}:200"},
                )
                return events, resumed

        (on_first, on_second), resumed = asyncio.run(scenario())
    assert log_seqs(on_first) == list(range(1, 201))
    assert log_seqs(on_second) == list(range(1, 201))
    assert log_seqs(resumed) == list(range(201, 251))


@pytest.mark.slow
@pytest.mark.redis
def test_live_lines_resume_at_once_after_redis_drops_the_web_processs_subscription(
    transactional_db, make_job, alice, redis_url, tmp_path
):
    import redis

    job = make_job(alice)
    token = token_for(alice)
    # Idle streams re-read the table only every 60 s here: what follows must not rely on that.
    env = service_env(redis_url=redis_url, LOG_STREAM_KEEP_ALIVE_SECONDS="60")
    server = redis.Redis.from_url(redis_url)

    def drop_subscriptions() -> int:
        subscribers = [
            client
            for client in server.client_list(_type="pubsub")
            if client.get("name") == "finetune-studio-events"
            and str(client.get("db")) == str(server.connection_pool.connection_kwargs.get("db", 0))
        ]
        for client in subscribers:
            server.client_kill_filter(_id=client["id"])
        return len(subscribers)

    with asgi_server(env=env, log_path=tmp_path / "web.log") as base:

        async def scenario():
            url = f"{base}/api/v1/jobs/{job.id}/logs"
            async with httpx.AsyncClient() as client:
                opened = asyncio.Event()
                reader = asyncio.create_task(
                    read_stream(client, url, token, reached(job.id, 20), timeout=8, opened=opened)
                )
                await opened_and_subscribed([opened], redis_url, processes=1)
                await asyncio.to_thread(emit, env, job.id, 1, 10)
                assert await asyncio.to_thread(drop_subscriptions) >= 1
                # Published while the web process has no subscription: these events never reach it,
                # and no later line shows the gap; subscribed again, the stream reads them from the table.
                await asyncio.to_thread(emit, env, job.id, 1, 10)
                first = await asyncio.wait_for(reader, 6)
                # The new subscription carries live lines again.
                opened = asyncio.Event()
                reader = asyncio.create_task(
                    read_stream(
                        client,
                        url,
                        token,
                        reached(job.id, 30),
                        headers={"Last-Event-ID": f"job-{job.id}:20"},
                        timeout=8,
                        opened=opened,
                    )
                )
                await opened_and_subscribed([opened], redis_url, processes=1)
                await asyncio.to_thread(emit, env, job.id, 1, 10)
                return first + await asyncio.wait_for(reader, 6)

        events = asyncio.run(scenario())
    assert log_seqs(events) == list(range(1, 31))
    assert "subscription dropped" in (tmp_path / "web.log").read_text()


@pytest.mark.slow
@pytest.mark.redis
def test_events_of_another_studio_on_the_same_redis_server_never_reach_a_stream(
    transactional_db, make_job, alice, redis_url, tmp_path
):
    import json

    import redis

    job = make_job(alice)
    token = token_for(alice)
    env = service_env(redis_url=redis_url)
    server = redis.Redis.from_url(redis_url)
    intruder = {
        "channel": f"job-{job.id}",
        "event_type": "logs",
        "data": json.dumps(
            {"prev_seq": 0, "last_seq": 1, "lines": [{"seq": 1, "level": "INFO", "message": "from another studio"}]},
            separators=(",", ":"),
        ),
        "pub_id": "1",
    }
    with asgi_server(env=env, log_path=tmp_path / "web.log") as base:

        async def scenario():
            url = f"{base}/api/v1/jobs/{job.id}/logs"
            async with httpx.AsyncClient() as client:
                opened = asyncio.Event()
                reader = asyncio.create_task(
                    read_stream(client, url, token, reached(job.id, 5), timeout=8, opened=opened)
                )
                await opened_and_subscribed([opened], redis_url, processes=1)
                # django-eventstream's own channel, and another studio's (same server, another database).
                # Redis delivers one connection's messages in publish order: were we subscribed to either,
                # the intruder would arrive before the lines emitted next.
                for channel in ("events_channel", "finetune-studio:db3:events"):
                    server.publish(channel, json.dumps(intruder))
                await asyncio.to_thread(emit, env, job.id, 1, 5)
                return await reader

        events = asyncio.run(scenario())
    messages = [line["message"] for event in events if event.type == "logs" for line in event.json["lines"]]
    assert messages == [f"batch 0 line {n}" for n in range(5)]
