"""PostgreSQL connections cut mid-ingestion under a real uvicorn: batches retried, every seq stored exactly once."""

import json
import time
from pathlib import Path

import pytest
import requests
from django.db import connection
from rest_framework.authtoken.models import Token

from logs_app.models import LogEntry
from tests.security.world import build_world
from tests.support.faultproxy import FaultProxy
from tests.support.processes import asgi_server, database_url, service_env

from .support import private_redis

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres, pytest.mark.slow]

SERVER_LOG = Path("/tmp/reliab_postgres_server.log")
BATCHES = 40
LINES_PER_BATCH = 50
FIRST_SEQ = 1000  # above the world's own lines


def _post_with_retries(session: requests.Session, url: str, batch: list[dict], counters: dict) -> None:
    """What a runner does: resend the same batch (same seqs) until the server says it is stored."""
    for _ in range(40):
        counters["requests"] += 1
        try:
            response = session.post(url, json=batch, timeout=15)
        except requests.ConnectionError:
            counters["connection_errors"] += 1
            time.sleep(0.1)
            continue
        if response.status_code in (200, 201):
            return
        counters[f"http_{response.status_code}"] = counters.get(f"http_{response.status_code}", 0) + 1
        # A dropped database is a 503 that says to retry; anything else would be a bug to surface.
        assert response.status_code == 503, response.text[:500]
        assert "database" in response.json()["detail"].lower()
        time.sleep(0.1)
    raise AssertionError(f"batch starting at seq {batch[0]['seq']} never got stored")


def test_cut_database_connections_mid_ingestion_lose_and_duplicate_no_line(alice):
    world = build_world(alice)
    job_id = world.running_job.id
    token = Token.objects.create(user=alice).key
    params = connection.settings_dict
    proxy = FaultProxy(params.get("HOST") or "127.0.0.1", int(params.get("PORT") or 5432)).start()
    proxied_url = database_url().replace(
        f"@{params.get('HOST') or '127.0.0.1'}:{params.get('PORT') or 5432}/", f"@127.0.0.1:{proxy.port}/"
    )
    assert str(proxy.port) in proxied_url
    counters = {"requests": 0, "connection_errors": 0, "severs": 0, "refused_windows": 0, "churn_phases": 0}
    env_extra = {"DATABASE_URL": proxied_url, "DB_POOL_TIMEOUT": "2", "DB_POOL_MIN_SIZE": "1"}
    try:
        with (
            private_redis() as broker,
            asgi_server(env=service_env(redis_url=broker.url, **env_extra), log_path=SERVER_LOG) as base,
        ):
            url = f"{base}/api/v1/jobs/{job_id}/logs"
            session = requests.Session()
            session.headers["Authorization"] = f"Token {token}"
            for number in range(BATCHES):
                start = FIRST_SEQ + number * LINES_PER_BATCH
                batch = [{"message": f"line {seq}", "seq": seq} for seq in range(start, start + LINES_PER_BATCH)]
                if number % 10 == 3:
                    # A restart as clients see it: every pooled connection dies, new ones are refused a moment.
                    proxy.refuse = True
                    counters["severs"] += proxy.sever()
                    counters["refused_windows"] += 1
                    _post_soon_after(session, url, batch, counters, proxy)
                    continue
                if number % 10 == 7:
                    # Connections that die after a few KiB of answers: some die mid-COMMIT.
                    proxy.reset_after = 6_000
                    counters["churn_phases"] += 1
                elif number % 10 == 9:
                    proxy.heal()
                _post_with_retries(session, url, batch, counters)
            proxy.heal()
            history = session.get(url, params={"format": "json", "after": FIRST_SEQ - 1, "limit": 1}, timeout=10)
            assert history.ok, history.text
    finally:
        proxy.stop()
    expected = list(range(FIRST_SEQ, FIRST_SEQ + BATCHES * LINES_PER_BATCH))
    stored = list(
        LogEntry.objects.filter(job_id=job_id, seq__gte=FIRST_SEQ).order_by("seq").values_list("seq", flat=True)
    )
    assert stored == expected  # no gap, no duplicate (the unique constraint would refuse one, the count proves it)
    assert LogEntry.objects.filter(job_id=job_id, message__startswith="line ").count() == len(expected)
    faults = proxy.resets  # severed connections and refused ones
    assert faults > 0 and counters["requests"] > BATCHES  # faults were met, and retried
    print(
        "FAULTS",
        json.dumps(
            {
                "scenario": "postgres connections cut mid-ingestion",
                "faults_injected": faults,
                "requests": counters["requests"],
                "retried_503": counters.get("http_503", 0),
                "retried_connection_errors": counters["connection_errors"],
                "lines": len(expected),
                "rows_lost": len(set(expected) - set(stored)),
                "rows_duplicated": len(stored) - len(set(stored)),
            }
        ),
    )


def _post_soon_after(session, url, batch, counters, proxy) -> None:
    """Send while new connections are refused, then let the database come back after a moment."""
    import threading

    timer = threading.Timer(1.0, lambda: setattr(proxy, "refuse", False))
    timer.start()
    try:
        _post_with_retries(session, url, batch, counters)
    finally:
        timer.cancel()
        proxy.refuse = False
