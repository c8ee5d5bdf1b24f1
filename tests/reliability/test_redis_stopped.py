"""Redis frozen (SIGSTOP) under a real uvicorn: broker calls fail fast, log lines are kept, streams catch up."""

import json
import time
from pathlib import Path

import pytest
import requests
from rest_framework.authtoken.models import Token

from jobs.models import Job
from logs_app.models import LogEntry
from tests.security.world import build_world
from tests.support.processes import asgi_server, service_env

from .support import private_redis

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]

FAIL_FAST_SECONDS = 8  # socket timeouts are 2 s; a few of them at most
SERVER_LOG = Path("/tmp/reliab_redis_server.log")


def test_with_redis_frozen_the_api_fails_fast_and_keeps_every_log_line(alice):
    from jobs.services import trainer_sync_builtin

    trainer_sync_builtin()
    world = build_world(alice)
    token = Token.objects.create(user=alice).key
    auth = {"Authorization": f"Token {token}"}
    with private_redis() as broker, asgi_server(env=service_env(redis_url=broker.url), log_path=SERVER_LOG) as base:
        logs_url = f"{base}/api/v1/jobs/{world.running_job.id}/logs"
        assert requests.post(logs_url, json=[{"message": "before", "seq": 100}], headers=auth, timeout=10).ok
        broker.stop()

        started = time.monotonic()
        ingest = requests.post(
            logs_url, json=[{"message": f"frozen {i}", "seq": 101 + i} for i in range(20)], headers=auth, timeout=30
        )
        ingest_seconds = time.monotonic() - started
        assert ingest.status_code == 201, ingest.text
        assert ingest_seconds < FAIL_FAST_SECONDS

        started = time.monotonic()
        evaluate = requests.post(
            f"{base}/api/v1/models/{world.model.id}/evaluate",
            json={"test_set_path": world.dataset.path, "base_model_name": "tiny", "fine_tuned_name": "tuned"},
            headers=auth,
            timeout=30,
        )
        evaluate_seconds = time.monotonic() - started
        assert evaluate.status_code == 503, evaluate.text
        assert evaluate.json()["detail"]
        assert evaluate_seconds < FAIL_FAST_SECONDS

        started = time.monotonic()
        create = requests.post(
            f"{base}/api/v1/jobs/",
            json={"name": "frozen", "base_model": "tiny", "trainer": "example", "dataset": world.dataset.id},
            headers=auth,
            timeout=30,
        )
        create_seconds = time.monotonic() - started
        # One publish attempt, no event to the frozen Redis before or after it: throttle + enqueue timeouts.
        assert create_seconds < FAIL_FAST_SECONDS
        assert create.status_code == 503, create.text
        assert "task queue is unavailable" in create.json()["detail"]
        # Recorded and failed with the reason: never "queued" with nothing in the queue, never answered as queued.
        refused = Job.objects.get(name="frozen")
        assert refused.status == "failed" and "could not be queued" in refused.error_message
        assert f"#{refused.id}" in create.json()["detail"]

        # Reads that need no broker keep working.
        assert requests.get(f"{base}/api/v1/jobs/{world.running_job.id}", headers=auth, timeout=10).ok
        broker.resume()

        history = requests.get(logs_url, params={"format": "json", "after": 99}, headers=auth, timeout=10).json()
        assert [line["seq"] for line in history["results"]] == list(range(100, 121))
        # A client that reconnects after Redis returns replays what it missed, from the table.
        replay = requests.get(
            logs_url,
            headers={**auth, "Accept": "text/event-stream", "Last-Event-ID": f"job-{world.running_job.id}:100"},
            stream=True,
            timeout=10,
        )
        seen: list[int] = []
        deadline = time.monotonic() + 10
        for raw in replay.iter_lines():
            if raw.startswith(b'data: {"prev_seq"'):
                seen += [line["seq"] for line in json.loads(raw[6:])["lines"]]
            if seen and seen[-1] >= 120 or time.monotonic() > deadline:
                break
        replay.close()
        assert seen == list(range(101, 121))
    assert LogEntry.objects.filter(job_id=world.running_job.id, seq__gt=100).count() == 20
    print(
        "FAULTS",
        json.dumps(
            {
                "scenario": "redis frozen (SIGSTOP)",
                "redis_stops": broker.stops,
                "ingest_s": round(ingest_seconds, 2),
                "evaluate_s": round(evaluate_seconds, 2),
                "job_create_s": round(create_seconds, 2),
                "lines_lost": 0,
            }
        ),
    )
