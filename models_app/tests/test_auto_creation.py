import json
import threading
import zlib
from hashlib import sha256

import pytest
from django.core.management import call_command
from django.db import connection
from django_eventstream.models import Event

from finetune_studio.celery import queue_of
from finetune_studio.objects import StorageError, bucket
from models_app import services, tasks
from models_app.models import RegisteredModel
from tests.factories import ADAPTER_BYTES, ARTIFACTS, make_trained_job


def test_a_succeeded_job_becomes_one_ready_model_with_manifest_metrics_and_paths(
    alice, django_capture_on_commit_callbacks
):
    job = make_trained_job(alice, name="sentiment run", base_model="tiny-llama")
    with django_capture_on_commit_callbacks(execute=True):
        model = services.model_create_from_job(job_id=job.id)

    assert model.name == "Model from sentiment run"
    assert model.owner == alice and model.job == job and model.base_model == "tiny-llama"
    assert model.status == "ready" and model.type == "lora"
    assert model.storage_path == job.storage_prefix
    assert model.lora_adapters_path == job.storage_prefix + "lora_adapters/"
    assert model.gguf_path == job.storage_prefix + "gguf/model-q4.gguf"
    assert model.total_size == sum(len(data) for data in ARTIFACTS.values())
    by_path = {item["path"]: item for item in model.files}
    assert sorted(by_path) == sorted(ARTIFACTS)
    adapter = by_path["lora_adapters/adapter_model.safetensors"]
    assert adapter == {
        "path": "lora_adapters/adapter_model.safetensors",
        "size": len(ADAPTER_BYTES),
        "sha256": sha256(ADAPTER_BYTES).hexdigest(),
        "crc32": f"{zlib.crc32(ADAPTER_BYTES):08x}",
        "content_type": "application/octet-stream",
        "kind": "adapter",
    }
    assert by_path["lora_adapters/tokenizer.json"]["kind"] == "tokenizer"
    assert by_path["lora_adapters/adapter_config.json"]["kind"] == "config"
    assert by_path["metrics.json"]["kind"] == "metrics"
    assert by_path["gguf/model-q4.gguf"]["kind"] == "weights"
    assert model.training_metrics["final"] == {"loss": 0.42, "accuracy": 0.91, "epoch": 3}
    assert len(model.training_metrics["loss_history"]) == 30
    assert model.training_metrics["loss_history"][0] == {"step": 1, "loss": 2.0, "epoch": 0.1}
    events = Event.objects.filter(channel=f"user-{alice.id}", type="model")
    assert events.count() == 1


def test_a_second_completion_returns_the_same_model(alice):
    job = make_trained_job(alice)
    first = services.model_create_from_job(job_id=job.id)
    second = services.model_create_from_job(job_id=job.id)
    assert first.id == second.id
    assert RegisteredModel.objects.filter(job=job).count() == 1


@pytest.mark.parametrize("status", ["failed", "cancelled", "running"])
def test_a_job_that_did_not_succeed_creates_no_model(alice, status):
    job = make_trained_job(alice, status=status)
    assert services.model_create_from_job(job_id=job.id) is None
    assert not RegisteredModel.objects.exists()


def test_a_missing_job_creates_no_model(db):
    assert services.model_create_from_job(job_id=987654) is None


def test_unreadable_metrics_are_reported_in_the_model_not_fatal(alice):
    job = make_trained_job(alice, artifacts={"lora_adapters/adapter_model.safetensors": b"w", "metrics.json": b"{nope"})
    model = services.model_create_from_job(job_id=job.id)
    assert model.status == "ready"
    assert model.training_metrics["final"] == {}
    assert "not valid JSON" in model.training_metrics["warnings"][0]


def test_without_metrics_json_the_metrics_the_job_recorded_are_used(alice):
    job = make_trained_job(alice, artifacts={"gguf/m.gguf": b"GGUF"})
    if not hasattr(job, "metric_points"):
        pytest.skip("the jobs app records no metric points in this checkout")
    job.metrics = {"loss": 0.5}
    job.save(update_fields=["metrics"])
    job.metric_points.create(step=1, data={"step": 1, "loss": 1.5})
    job.metric_points.create(step=2, data={"step": 2, "loss": 0.5})
    model = services.model_create_from_job(job_id=job.id)
    assert model.type == "gguf"
    assert model.training_metrics["final"] == {"loss": 0.5}
    assert [p["loss"] for p in model.training_metrics["loss_history"]] == [1.5, 0.5]


def test_a_storage_failure_raises_and_writes_nothing(alice, s3_buckets):
    job = make_trained_job(alice, artifacts={})
    bucket("models").client.delete_bucket(Bucket=bucket("models").name)
    with pytest.raises(StorageError):
        services.model_create_from_job(job_id=job.id)
    assert not RegisteredModel.objects.exists()


def test_the_celery_task_returns_the_model_id(alice):
    job = make_trained_job(alice)
    model_id = tasks.model_create_from_job.delay(job.id).get()
    assert RegisteredModel.objects.get(id=model_id).job_id == job.id


def test_the_task_keeps_its_name_and_runs_acks_late_on_the_default_queue():
    task = tasks.model_create_from_job
    assert task.name == "models_app.model_create_from_job"
    assert task.acks_late and task.reject_on_worker_lost and queue_of(task.name) == "default"
    assert task.autoretry_for == (StorageError,) and task.max_retries and task.time_limit


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicate_completions_create_exactly_one_model(django_user_model):
    owner = django_user_model.objects.create_user(username="carol", password="x")
    job = make_trained_job(owner)
    threads_count = 6
    barrier = threading.Barrier(threads_count)
    results, errors = [], []

    def complete():
        try:
            barrier.wait(timeout=10)
            results.append(services.model_create_from_job(job_id=job.id).id)
        except Exception as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=complete) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert RegisteredModel.objects.filter(job=job).count() == 1
    assert set(results) == {RegisteredModel.objects.get(job=job).id}
    assert Event.objects.filter(channel=f"user-{owner.id}", type="model").count() == 1


def test_backfill_creates_models_for_succeeded_jobs_without_one(alice, capsys):
    done = make_trained_job(alice, name="old run")
    empty = make_trained_job(alice, name="nothing written", artifacts={})
    make_trained_job(alice, name="failed run", status="failed")
    already = make_trained_job(alice, name="has one")
    services.model_create_from_job(job_id=already.id)

    call_command("models_backfill")

    out = capsys.readouterr().out
    assert RegisteredModel.objects.filter(job=done).count() == 1
    assert not RegisteredModel.objects.filter(job=empty).exists()
    assert RegisteredModel.objects.count() == 2
    assert f"skipped job {empty.id}" in out and "1 created" in out
    call_command("models_backfill", "--include-empty")
    assert RegisteredModel.objects.filter(job=empty).exists()


def test_a_success_announced_by_the_jobs_app_creates_the_model_and_its_event_names_the_job(
    alice, listen, django_capture_on_commit_callbacks
):
    from finetune_studio.events import user_channel
    from jobs.services import job_complete

    job = make_trained_job(alice, status="running")
    listener = listen(user_channel(alice.id))
    with django_capture_on_commit_callbacks(execute=True):
        job_complete(job_id=job.id, status="succeeded")
    model = RegisteredModel.objects.get(job=job)
    events = [event.data if isinstance(event.data, dict) else json.loads(event.data) for event in listener.events()]
    created = [data for data in events if data.get("model_id") == model.id]
    # The job page reloads on a model event whose job_id is its job (static/jobs/job_detail.js).
    assert [(data["action"], data["job_id"], data["id"], data["url"]) for data in created] == [
        ("created", job.id, model.id, f"/models/{model.id}/")
    ]
    # Every user-channel event carries the shared keys, whatever its type.
    assert all({"id", "action", "job_id", "model_id", "url"} <= data.keys() for data in events)


def test_beat_backfills_the_models_of_jobs_past_the_grace_and_leaves_recent_ones_to_their_own_creation(alice, settings):
    from datetime import timedelta

    from django.utils import timezone

    settings.MODELS_BACKFILL_GRACE_SECONDS = 300
    old = make_trained_job(alice, name="old run", finished_at=timezone.now() - timedelta(hours=1))
    recent = make_trained_job(alice, name="recent run")
    assert tasks.models_backfill() == 1
    assert RegisteredModel.objects.filter(job=old).exists()
    assert not RegisteredModel.objects.filter(job=recent).exists()
    assert "models_app.models_backfill" in {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
