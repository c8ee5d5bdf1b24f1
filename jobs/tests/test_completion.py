"""Completion fires exactly once, whoever reports it and however often."""

import threading

import pytest
from django.db import connection

from finetune_studio.objects import bucket
from jobs import services
from jobs.models import Job, JobMetric

pytestmark = pytest.mark.django_db


@pytest.fixture
def external_job(alice, queued_job):
    return queued_job(alice, None, "external")


def test_a_success_is_announced_once_after_commit(
    alice, make_dataset, queued_job, model_creations, django_capture_on_commit_callbacks
):
    job = queued_job(alice, make_dataset(alice), "example")
    services.job_claim(job_id=job.id, lease_owner="me")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        job, changed = services.job_complete(job_id=job.id, status="succeeded", exit_code=0)
        again, changed_again = services.job_complete(job_id=job.id, status="succeeded", exit_code=0)
        _, failed_later = services.job_complete(job_id=job.id, status="failed", error_message="late")
    assert (changed, changed_again, failed_later) == (True, False, False)
    assert model_creations == []
    for callback in callbacks:
        callback()
    assert model_creations == [job.id]
    job.refresh_from_db()
    assert (job.status, job.exit_code, job.progress["percent"]) == ("succeeded", 0, 100.0)


def test_a_failure_creates_no_model(alice, external_job, model_creations, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        services.job_complete(job_id=external_job.id, status="failed", error_message="out of memory")
    assert model_creations == []
    assert Job.objects.get(id=external_job.id).error_message == "out of memory"


def test_the_complete_api_reports_the_end_of_an_external_job(
    alice_api, external_job, model_creations, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_api.post(
            f"/api/v1/jobs/{external_job.id}/complete", {"status": "succeeded", "metrics": {"final_loss": 0.4}}
        )
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "succeeded"
    assert response.json()["metrics"] == {"final_loss": 0.4}
    assert model_creations == [external_job.id]
    # The model registry reads the metrics from the job's prefix.
    assert bucket("models").read_bytes(external_job.storage_prefix + "metrics.json") == b'{"final_loss": 0.4}'
    with django_capture_on_commit_callbacks(execute=True):
        duplicate = alice_api.post(f"/api/v1/jobs/{external_job.id}/complete", {"status": "succeeded"})
        conflicting = alice_api.post(f"/api/v1/jobs/{external_job.id}/complete", {"status": "failed"})
    assert duplicate.status_code == 200
    assert conflicting.status_code == 409
    assert "already ended as succeeded" in conflicting.json()["detail"]
    assert model_creations == [external_job.id]


def test_the_complete_api_refuses_bad_reports_and_local_jobs(alice_api, alice, make_dataset, queued_job, external_job):
    assert alice_api.post(f"/api/v1/jobs/{external_job.id}/complete", {"status": "done"}).status_code == 400
    response = alice_api.post(f"/api/v1/jobs/{external_job.id}/complete", {"status": "failed", "metrics": [1]})
    assert response.status_code == 400
    local = queued_job(alice, make_dataset(alice), "example")
    response = alice_api.post(f"/api/v1/jobs/{local.id}/complete", {"status": "succeeded"})
    assert response.status_code == 409
    assert Job.objects.get(id=local.id).status == "queued"


def test_status_json_in_the_logs_bucket_settles_an_external_job(
    external_job, model_creations, django_capture_on_commit_callbacks
):
    storage = bucket("logs")
    storage.put_bytes(external_job.storage_prefix + "status.json", b'{"status": "running"}')
    assert services.job_poll_external_status() == 1
    assert Job.objects.get(id=external_job.id).status == "running"
    storage.put_bytes(
        external_job.storage_prefix + "status.json", b'{"status": "failed", "error_message": "CUDA out of memory"}'
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert services.job_poll_external_status() == 1
        assert services.job_poll_external_status() == 0  # finished jobs are not polled again
    job = Job.objects.get(id=external_job.id)
    assert (job.status, job.error_message) == ("failed", "CUDA out of memory")
    assert model_creations == []


def test_a_broken_status_json_is_skipped(external_job):
    bucket("logs").put_bytes(external_job.storage_prefix + "status.json", b"{not json")
    assert services.job_poll_external_status() == 0
    assert Job.objects.get(id=external_job.id).status == "queued"


def test_metrics_points_update_progress_eta_and_chart_history(
    alice, make_dataset, queued_job, django_capture_on_commit_callbacks
):
    from django.utils import timezone

    job = queued_job(alice, make_dataset(alice), "example")
    services.job_claim(job_id=job.id, lease_owner="me")
    Job.objects.filter(id=job.id).update(started_at=timezone.now() - timezone.timedelta(seconds=100))
    points = [
        {"step": 10, "loss": 2.0, "total_steps": 100},
        {"step": 25, "epoch": 1, "loss": 1.5, "learning_rate": 0.1},
    ]
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert services.job_metrics_record(job_id=job.id, points=points) == 2
        assert services.job_metrics_record(job_id=job.id, points=points[:1] + [{"loss": 3}, "junk"]) == 0
    progress = Job.objects.get(id=job.id).progress
    assert progress["step"] == 25 and progress["total_steps"] == 100 and progress["percent"] == 25.0
    assert progress["epoch"] == 1 and progress["loss"] == 1.5
    assert 290 <= progress["eta_seconds"] <= 310  # 100 s for 25 steps → ~300 s for the other 75
    assert list(JobMetric.objects.filter(job=job).values_list("step", flat=True)) == [10, 25]
    assert len(callbacks) >= 1


def test_metrics_of_an_external_job_mark_it_running(external_job):
    services.job_metrics_record(job_id=external_job.id, points=[{"step": 1, "loss": 1.0}])
    assert Job.objects.get(id=external_job.id).status == "running"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_completion_reports_fire_the_hook_exactly_once(alice, make_dataset, queued_job, model_creations):
    job = queued_job(alice, None, "external")
    services.job_mark_running(job_id=job.id)
    barrier = threading.Barrier(8)
    results = []

    def report(status):
        try:
            barrier.wait()
            results.append(services.job_complete(job_id=job.id, status=status, error_message="x")[1])
        finally:
            connection.close()

    threads = [threading.Thread(target=report, args=("succeeded" if i % 2 else "failed",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(results) == [False] * 7 + [True]
    final = Job.objects.get(id=job.id).status
    assert model_creations == ([job.id] if final == "succeeded" else [])


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_only_one_of_two_concurrent_runners_claims_a_job(alice, queued_job):
    job = queued_job(alice, None, "external")
    barrier = threading.Barrier(2)
    claims = []

    def claim(owner):
        try:
            barrier.wait()
            claims.append(services.job_claim(job_id=job.id, lease_owner=owner))
        finally:
            connection.close()

    threads = [threading.Thread(target=claim, args=(f"runner-{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(claims) == [False, True]


@pytest.mark.parametrize("settle", ["succeeded", "failed", "cancelled"])
def test_a_final_status_is_announced_once_after_commit(
    settle, alice, external_job, job_signals, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        if settle == "cancelled":
            services.job_cancel(job_id=external_job.id)
        else:
            services.job_complete(job_id=external_job.id, status=settle)
            services.job_complete(job_id=external_job.id, status=settle)
    assert job_signals == []  # nothing before commit
    for callback in callbacks:
        callback()
    expected = [("job_finished", {"job_id": external_job.id, "owner_id": external_job.owner_id, "status": settle})]
    if settle == "succeeded":
        expected.append(("job_succeeded", {"job_id": external_job.id}))
    assert job_signals == expected
