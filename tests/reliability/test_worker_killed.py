"""A real Celery worker SIGKILLed mid-completion and mid-evaluation: a new worker finishes, nothing done twice."""

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import requests
from django.conf import settings as django_settings
from rest_framework.authtoken.models import Token

from evaluations.models import Evaluation, Prediction
from finetune_studio.objects import bucket
from models_app.models import RegisteredModel
from tests.security.world import build_world
from tests.support.faultproxy import FaultProxy
from tests.support.processes import ROOT, asgi_server, celery_worker, service_env

from .support import private_redis

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres, pytest.mark.slow]

LOGS = Path("/tmp")
ADAPTER = bytes(range(256)) * 4096  # 1 MiB: checksummed through a slow link, the kill lands mid-read


def _send_task(broker_url: str, name: str, args: list, queue: str) -> None:
    """Publish to the real broker (the test process itself runs tasks eagerly)."""
    from celery.exceptions import AlwaysEagerIgnored

    from finetune_studio.celery import app

    with app.connection_for_write(broker_url) as connection, warnings.catch_warnings():
        warnings.simplefilter("ignore", AlwaysEagerIgnored)  # the point: this one goes to the broker
        app.send_task(name, args=args, queue=queue, connection=connection)


def _kill(worker: subprocess.Popen) -> None:
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)


def _wait_for(condition, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_a_worker_killed_mid_model_creation_ends_with_exactly_one_model(alice):
    world = build_world(alice)
    job = world.running_job  # external: its runner reports the end through the API
    artifacts = bucket("models")
    artifacts.put_bytes(job.storage_prefix + "lora_adapters/adapter_model.safetensors", ADAPTER)
    artifacts.put_bytes(job.storage_prefix + "lora_adapters/adapter_config.json", b'{"r": 8, "lora_alpha": 16}')
    token = Token.objects.create(user=alice).key
    host, port = django_settings.S3_ENDPOINT_URL.removeprefix("http://").split(":")
    slow_storage = FaultProxy(host, int(port)).start()
    slow_storage.latency = 0.2  # per chunk: reading the adapter takes seconds
    try:
        with private_redis() as broker:
            worker_env = service_env(redis_url=broker.url, S3_ENDPOINT_URL=slow_storage.url)
            with asgi_server(env=service_env(redis_url=broker.url), log_path=LOGS / "reliab_kill_server.log") as base:
                first = celery_worker(env=worker_env, log_path=LOGS / "reliab_kill_worker1.log")
                worker = first.__enter__()
                try:
                    report = requests.post(
                        f"{base}/api/v1/jobs/{job.id}/complete",
                        json={"status": "succeeded"},
                        headers={"Authorization": f"Token {token}"},
                        timeout=10,
                    )
                    assert report.ok, report.text
                    # The worker took the model creation and is reading the artifacts: kill it there.
                    _wait_for(lambda: slow_storage.connections > 0, timeout=15, what="the worker to read storage")
                    time.sleep(0.5)
                    _kill(worker)
                finally:
                    first.__exit__(None, None, None)
            assert not RegisteredModel.objects.filter(job_id=job.id).exists()  # killed before it could insert
            slow_storage.heal()

            # A new worker gets the creation again (what redelivery of the unacked message does) while an
            # operator runs the backfill: two creators race, the unique job column keeps one model.
            with celery_worker(env=worker_env, log_path=LOGS / "reliab_kill_worker2.log"):
                _send_task(broker.url, "models_app.model_create_from_job", [job.id], "default")
                backfill = subprocess.run(
                    [sys.executable, "manage.py", "models_backfill"],
                    cwd=ROOT,
                    env=worker_env,
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                assert backfill.returncode == 0, backfill.stderr
                _wait_for(lambda: RegisteredModel.objects.filter(job_id=job.id).exists(), timeout=30, what="the model")
                # Both creators done (the task's worker logs it; the backfill already returned): still one model.
                _wait_for(
                    lambda: (
                        "model_create_from_job" in (LOGS / "reliab_kill_worker2.log").read_text(errors="replace")
                        and "succeeded" in (LOGS / "reliab_kill_worker2.log").read_text(errors="replace")
                    ),
                    timeout=30,
                    what="the redelivered creation to finish",
                )
    finally:
        slow_storage.stop()
    models = RegisteredModel.objects.filter(job_id=job.id)
    assert models.count() == 1
    paths = {entry["path"] for entry in models.get().files}
    assert "lora_adapters/adapter_model.safetensors" in paths
    print(
        "FAULTS",
        json.dumps(
            {
                "scenario": "worker SIGKILLed mid model creation",
                "workers_killed": 1,
                "creators_after": 2,
                "models": models.count(),
                "rows_lost": 0,
            }
        ),
    )


def test_a_worker_killed_mid_evaluation_is_resumed_without_asking_a_stored_example_again(
    alice, make_model, make_test_set, trained_ollama, tasks_not_run
):
    from evaluations import services

    trained_ollama.latency = 0.15  # 24 answers at concurrency 2: about 2 s of work
    # Created through the service; its run is queued on the real broker below (tasks_not_run: not in-process).
    evaluation = services.evaluation_start(
        user=alice,
        model=make_model(alice),
        test_set_path=make_test_set(alice).path,
        base_model_name="llama3.2:3b",
        concurrency=2,
    )
    lease = 10
    with private_redis() as broker:
        env = service_env(redis_url=broker.url, OLLAMA_URL=trained_ollama.url, EVALUATION_LEASE_SECONDS=str(lease))
        first = celery_worker(env=env, log_path=LOGS / "reliab_kill_eval_worker1.log")
        worker = first.__enter__()
        try:
            _send_task(broker.url, "evaluations.tasks.evaluation_run", [evaluation.id], "evaluations")
            _wait_for(
                lambda: Prediction.objects.filter(evaluation=evaluation).count() >= 4,
                timeout=20,
                what="some stored predictions",
            )
            _kill(worker)
        finally:
            first.__exit__(None, None, None)
        killed_at = time.monotonic()
        asked_before = len(trained_ollama.chat_requests())
        stored = {(p.candidate, p.input_text) for p in Prediction.objects.filter(evaluation=evaluation)}
        evaluation.refresh_from_db()
        assert evaluation.status == "running" and 0 < len(stored) < 24

        with celery_worker(env=env, log_path=LOGS / "reliab_kill_eval_worker2.log"):
            # The beat's sweeper, once the dead worker's lease expired, re-queues it; the new worker resumes.
            time.sleep(max(0.0, lease + 0.5 - (time.monotonic() - killed_at)))
            _send_task(broker.url, "evaluations.tasks.evaluation_sweep_stale", [], "evaluations")
            _wait_for(
                lambda: Evaluation.objects.get(id=evaluation.id).status not in ("pending", "running"),
                timeout=30,
                what="the resumed evaluation to finish",
            )
    evaluation.refresh_from_db()
    assert evaluation.status == "completed", evaluation.error_message
    assert evaluation.attempts == 2
    assert Prediction.objects.filter(evaluation=evaluation).count() == 24
    asked_after = trained_ollama.chat_requests()[asked_before:]
    repeated = [
        request
        for request in asked_after
        if any(
            request.model.split(":")[0] == candidate.split(":")[0] and text in request.prompt
            for candidate, text in stored
        )
    ]
    assert repeated == [], "an example stored before the kill was asked again"
    assert evaluation.results["fine_tuned"]["accuracy"] == 1.0
    print(
        "FAULTS",
        json.dumps(
            {
                "scenario": "worker SIGKILLed mid evaluation",
                "workers_killed": 1,
                "stored_before_kill": len(stored),
                "requests_after_resume": len(asked_after),
                "asked_twice_once_stored": len(repeated),
                "stuck_running": 0,
                "rows_lost": 0,
            }
        ),
    )
