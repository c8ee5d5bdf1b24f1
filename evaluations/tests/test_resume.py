"""A worker lost mid-run: the sweeper and the lease. A worker SIGKILLed mid-run and resumed without re-asking a
stored example: tests/reliability/test_worker_killed.py (a real Celery worker, killed)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from evaluations import services
from evaluations.models import Evaluation
from finetune_studio.celery import queue_of

from .test_api import evaluate


@pytest.fixture
def pending(alice, alice_api, make_model, make_test_set, trained_ollama):
    response = evaluate(alice_api, make_model(alice), make_test_set(alice), concurrency=2)
    return Evaluation.objects.get(id=response.json()["evaluation_id"])


def _asked_pairs(server, from_request: int = 0) -> list[tuple[str, str]]:
    return [(request.model, request.prompt) for request in server.chat_requests()[from_request:]]


def test_the_sweeper_fails_an_evaluation_whose_workers_keep_dying(pending, settings):
    settings.EVALUATION_MAX_ATTEMPTS = 2
    Evaluation.objects.filter(id=pending.id).update(
        status="running", attempts=2, heartbeat_at=timezone.now() - timedelta(hours=1)
    )
    assert services.evaluation_sweep_stale() == {"requeued": 0, "failed": 1}
    pending.refresh_from_db()
    assert pending.status == "failed"
    assert "gave up after 2 attempts" in pending.error_message


def test_the_sweeper_leaves_healthy_runs_alone(pending):
    Evaluation.objects.filter(id=pending.id).update(status="running", attempts=1, heartbeat_at=timezone.now())
    assert services.evaluation_sweep_stale() == {"requeued": 0, "failed": 0}


def test_a_redelivered_task_does_not_run_a_finished_evaluation_twice(
    pending, trained_ollama, django_capture_on_commit_callbacks
):
    services.evaluation_execute(evaluation_id=pending.id)
    asked = len(trained_ollama.chat_requests())
    from evaluations.tasks import evaluation_run

    evaluation_run.delay(pending.id)
    assert len(trained_ollama.chat_requests()) == asked
    pending.refresh_from_db()
    assert pending.status == "completed" and pending.attempts == 1


def test_the_standalone_redispatcher_requeues_unfinished_work(pending, settings, django_capture_on_commit_callbacks):
    assert "evaluations.services.evaluation_redispatch_unfinished" in settings.UNFINISHED_WORK_REDISPATCHERS
    Evaluation.objects.filter(id=pending.id).update(status="running", heartbeat_at=timezone.now())
    assert services.evaluation_redispatch_unfinished() == 1
    pending.refresh_from_db()
    assert pending.status == "completed", pending.error_message


def test_the_beat_schedule_runs_the_sweeper(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["evaluations-sweep-stale"]
    assert entry["task"] == "evaluations.tasks.evaluation_sweep_stale"
    from evaluations.tasks import evaluation_run, evaluation_sweep_stale

    assert evaluation_sweep_stale.name == entry["task"]
    assert (
        queue_of(evaluation_run.name) == "evaluations"
        and evaluation_run.acks_late
        and evaluation_run.reject_on_worker_lost
    )
