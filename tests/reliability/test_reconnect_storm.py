"""A reconnect storm under real processes: every browser reopens its log stream at once after a restart.

Two uvicorn workers, PostgreSQL, Redis; a few hundred raw SSE clients (tests/support/sse_storm.py) open
``GET /api/v1/jobs/:id/logs`` at the same instant while lines flow. The pool is made small and impatient
(3 connections, 1 s) so that a modest storm does to it what 1,000 browsers do to the default pool.
bench/bench_logs_storm.py measures 1,000 and 5,000 with the default settings.
"""

import asyncio
import contextlib
import json
import threading
import time
from pathlib import Path

import psycopg
import pytest
import requests
from django.db import connection
from rest_framework.authtoken.models import Token

from logs_app.services import log_lines_append
from tests.security.world import build_world
from tests.support.processes import asgi_server, database_url, service_env
from tests.support.sse_storm import Storm

from .support import private_redis

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres, pytest.mark.slow]

CLIENTS = 300
ALREADY_OPEN = 10
SMALL_POOL = {"DB_POOL_MAX_SIZE": "3", "DB_POOL_MIN_SIZE": "1", "DB_POOL_TIMEOUT": "1"}
SERVER_LOG = Path("/tmp/reliab_storm_server.log")


@contextlib.contextmanager
def lines_flowing(job_id: int):
    """A runner appending 5 lines 5 times a second (live batches, and gaps the streams read from the table)."""
    stop = threading.Event()

    def emit() -> None:
        try:
            while not stop.wait(0.2):
                log_lines_append(job_id=job_id, lines=[{"message": f"live {n}"} for n in range(5)])
        finally:
            connection.close()

    thread = threading.Thread(target=emit, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


@contextlib.contextmanager
def table_locked(table: str):
    """Every query on ``table`` waits (another session holds an exclusive lock): the database is slow, not down."""
    with psycopg.connect(database_url(), autocommit=False) as locker:
        locker.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        yield
        locker.rollback()


async def storm_then_hold(url: str, token: str, *, clients: int, hold: float) -> tuple[dict, dict]:
    already = Storm(url, [token], ALREADY_OPEN)
    await already.open_all(timeout=30)
    assert already.summary()["opened"] == ALREADY_OPEN
    storm = Storm(url, [token], clients)
    await storm.open_all(timeout=90)
    await storm.lines_reached_all(timeout=60)  # openings go first, then each stream's backlog
    await asyncio.sleep(hold)  # access re-checks and live batches while everything is open
    summary, already_summary = storm.summary(), already.summary()
    await storm.close()
    await already.close()
    return summary, already_summary


def test_a_reconnect_storm_opens_every_stream_and_cuts_none(alice):
    job_id = build_world(alice).running_job.id
    log_lines_append(job_id=job_id, lines=[{"message": f"backlog {n}"} for n in range(300)])
    token = Token.objects.create(user=alice).key
    env_extra = {**SMALL_POOL, "STREAM_DB_SLOTS": "2", "LOG_STREAM_ACCESS_RECHECK_SECONDS": "1"}
    with (
        private_redis() as broker,
        asgi_server(env=service_env(redis_url=broker.url, **env_extra), workers=2, log_path=SERVER_LOG) as base,
        lines_flowing(job_id),
    ):
        url = f"{base}/api/v1/jobs/{job_id}/logs"
        started = time.monotonic()
        storm, already = asyncio.run(storm_then_hold(url, token, clients=CLIENTS, hold=2.5))
        seconds = time.monotonic() - started
    print("STORM", json.dumps({"storm": storm, "already_open": already, "seconds": round(seconds, 1)}))
    assert storm["not_opened"] == {}, storm
    assert storm["opened"] == CLIENTS
    assert storm["cut"] == 0, storm
    assert already["cut"] == 0, already
    assert storm["open_without_lines"] == 0, storm  # each got its backlog: opened and read, not just parked
    assert "PoolTimeout" not in SERVER_LOG.read_text(errors="replace")


def test_openings_that_cannot_get_a_turn_in_time_are_told_busy_and_open_streams_stay(alice):
    job_id = build_world(alice).running_job.id
    token = Token.objects.create(user=alice).key
    env_extra = {**SMALL_POOL, "STREAM_DB_SLOTS": "1", "STREAM_OPEN_WAIT_SECONDS": "1", "BUSY_RETRY_AFTER_SECONDS": "7"}
    with (
        private_redis() as broker,
        asgi_server(env=service_env(redis_url=broker.url, **env_extra), workers=2, log_path=SERVER_LOG) as base,
    ):
        url = f"{base}/api/v1/jobs/{job_id}/logs"

        async def storm_while_tokens_are_locked():
            already = Storm(url, [token], ALREADY_OPEN)
            await already.open_all(timeout=30)
            storm = Storm(url, [token], 40)
            with table_locked("authtoken_token"):  # each worker's one turn waits in PostgreSQL for 3 s
                opening = asyncio.ensure_future(storm.open_all(timeout=60))
                await asyncio.sleep(3)
            await opening
            summary, already_summary = storm.summary(), already.summary()
            await storm.close()
            await already.close()
            return summary, already_summary, storm.streams

        storm, already, streams = asyncio.run(storm_while_tokens_are_locked())
    print("STORM", json.dumps({"storm": storm, "already_open": already}))
    refused = [stream for stream in streams if stream.opened_after is None]
    assert refused, "with one turn per worker held 3 s, openings waiting 1 s must be shed"
    assert storm["opened"] >= 2  # the turn holders opened once the lock went
    for stream in refused:
        assert stream.status == 503, stream.outcome
        assert stream.detail.startswith("The studio is busy"), stream.detail
        assert "unavailable" not in stream.detail
        assert stream.retry_after == "7"
    assert storm["cut"] == 0 and already["cut"] == 0


def test_a_request_that_finds_every_pooled_connection_busy_is_told_busy_not_database_unavailable(alice):
    job_id = build_world(alice).running_job.id
    token = Token.objects.create(user=alice).key
    auth = {"Authorization": f"Token {token}"}
    env = service_env(**SMALL_POOL, BUSY_RETRY_AFTER_SECONDS="7")
    with asgi_server(env=env, log_path=SERVER_LOG) as base:
        url = f"{base}/api/v1/jobs/{job_id}/logs"
        answers: list[requests.Response] = []

        def post(n: int) -> None:  # ingestion takes no turn: it meets the pool itself
            line = {"message": f"line {n}", "seq": 1000 + n}
            answers.append(requests.post(url, json=[line], headers=auth, timeout=30))

        with table_locked("authtoken_token"):  # 3 requests hold the 3 connections, waiting on the lock
            posts = [threading.Thread(target=post, args=(n,)) for n in range(6)]
            for thread in posts:
                thread.start()
            time.sleep(3)
        for thread in posts:
            thread.join(timeout=30)
    statuses = sorted(answer.status_code for answer in answers)
    assert 201 in statuses and 503 in statuses, statuses
    for answer in answers:
        if answer.status_code == 503:
            assert answer.json()["detail"].startswith("The studio is busy"), answer.text
            assert answer.headers["Retry-After"] == "7"
