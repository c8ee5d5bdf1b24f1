"""The local runner against real trainer processes, real PostgreSQL and the moto S3 server."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.db import connection

from finetune_studio.objects import bucket
from jobs import services
from jobs.models import Job, Trainer
from logs_app.models import LogEntry
from runner.services import run_job
from tests.support.processes import ROOT, service_env


@pytest.fixture
def alice_dataset(alice, make_dataset):
    return make_dataset(alice)


def wait_for(predicate, timeout=15.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def process_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state == "Z"


@pytest.mark.django_db
def test_a_job_succeeds_end_to_end_with_its_artifacts_in_s3(
    alice_api, alice, make_dataset, model_creations, django_capture_on_commit_callbacks
):
    dataset = make_dataset(alice)
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_api.post(
            "/api/v1/jobs",
            {
                "name": "e2e",
                "base_model": "tiny",
                "dataset": dataset.id,
                "trainer": "example",
                "hyperparameters": {"epochs": 3},
            },
            format="json",
        )
    assert response.status_code == 201
    job = Job.objects.get(id=response.json()["id"])
    assert job.status == "succeeded", job.error_message
    assert job.exit_code == 0
    assert job.started_at and job.finished_at and job.lease_expires_at is None
    keys = {info.key.removeprefix(job.storage_prefix) for info in bucket("models").list(job.storage_prefix)}
    assert keys == {"metrics.json", "classifier/model.joblib", "classifier/labels.json", "classifier/config.json"}
    assert job.metrics["epochs"] == 3 and job.metrics["kind"].startswith("scikit-learn")
    assert model_creations == [job.id]
    stdout = list(LogEntry.objects.filter(job=job, source="stdout").values_list("message", flat=True))
    assert sum('"epoch"' in line for line in stdout) == 3
    assert any("20 records, 2 labels" in line for line in stdout)
    assert LogEntry.objects.filter(job=job, source="runner").exists()
    assert alice_api.get(f"/api/v1/jobs/{job.id}").json()["status"] == "succeeded"


@pytest.mark.django_db
def test_a_failing_trainer_fails_the_job_with_its_exit_code_and_last_error(
    alice, alice_dataset, slow_trainer, queued_job, model_creations
):
    job = queued_job(alice, alice_dataset, slow_trainer, seconds=0, exit_code=3)
    assert run_job(job_id=job.id) == "failed"
    job.refresh_from_db()
    assert (job.status, job.exit_code) == ("failed", 3)
    assert job.error_message == "trainer exited with code 3: giving up with exit code 3"
    assert model_creations == []
    assert list(bucket("models").list(job.storage_prefix)) == []


@pytest.mark.django_db
def test_the_trainer_gets_the_contract_env_and_no_worker_secrets(
    alice, alice_dataset, slow_trainer, queued_job, monkeypatch
):
    monkeypatch.setenv("SECRET_KEY", "do-not-leak")
    job = queued_job(alice, alice_dataset, slow_trainer, seconds=0.2, artifact=True)
    assert run_job(job_id=job.id) == "succeeded"
    lines = list(LogEntry.objects.filter(job=job, source="stdout").values_list("message", flat=True))
    assert f"env JOB_ID={job.id} HP_SECONDS=0.2" in lines
    assert "secret visible: False" in lines
    assert bucket("models").exists(job.storage_prefix + "lora_adapters/adapter_config.json")


@pytest.mark.django_db
def test_a_trainer_past_its_timeout_is_stopped_and_failed(
    alice, alice_dataset, slow_trainer, queued_job, settings, tmp_path
):
    Trainer.objects.filter(id=slow_trainer.id).update(timeout_seconds=1)
    pid_file = tmp_path / "pid"
    job = queued_job(alice, alice_dataset, slow_trainer, seconds=30, pid_file=str(pid_file))
    started = time.monotonic()
    assert run_job(job_id=job.id) == "timeout"
    assert time.monotonic() - started < 8
    job.refresh_from_db()
    assert job.status == "failed"
    assert job.error_message == "timed out after 1 s (the limit of trainer slow-test)"
    assert process_gone(int(pid_file.read_text()))


def run_in_thread(job_id):
    outcome = {}

    def target():
        try:
            outcome["result"] = run_job(job_id=job_id)
        finally:
            connection.close()

    thread = threading.Thread(target=target)
    thread.start()
    return thread, outcome


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("ignore_sigterm", [False, True], ids=["sigterm", "sigkill-after-grace"])
def test_cancel_while_running_ends_the_process_group(
    alice, alice_dataset, slow_trainer, queued_job, settings, tmp_path, ignore_sigterm
):
    settings.JOB_KILL_GRACE_SECONDS = 1
    pid_file = tmp_path / "pid"
    job = queued_job(
        alice, alice_dataset, slow_trainer, seconds=30, pid_file=str(pid_file), ignore_sigterm=ignore_sigterm
    )
    thread, outcome = run_in_thread(job.id)
    wait_for(lambda: LogEntry.objects.filter(job=job, source="stdout", message__contains='"step": 3').exists())
    pid = int(pid_file.read_text())
    cancelled_at = time.monotonic()
    services.job_cancel(job_id=job.id)
    thread.join(15)
    assert outcome["result"] == "cancelled"
    assert time.monotonic() - cancelled_at < 5
    assert process_gone(pid)
    job.refresh_from_db()
    assert (job.status, job.error_message) == ("cancelled", "cancelled by the user")
    assert LogEntry.objects.filter(job=job, source="runner", message__startswith="job cancelled").exists()


@pytest.mark.django_db
def test_a_redelivered_run_of_a_claimed_job_runs_nothing(alice, alice_dataset, slow_trainer, queued_job):
    job = queued_job(alice, alice_dataset, slow_trainer, seconds=0)
    assert services.job_claim(job_id=job.id, lease_owner="another-worker")
    assert run_job(job_id=job.id) == "not-claimed"
    assert Job.objects.get(id=job.id).lease_owner == "another-worker"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_run_is_failed_by_the_sweeper_and_never_rerun(
    alice, alice_dataset, slow_trainer, queued_job, tmp_path
):
    pid_file = tmp_path / "pid"
    job = queued_job(alice, alice_dataset, slow_trainer, seconds=60, pid_file=str(pid_file))
    env = service_env(JOB_HEARTBEAT_INTERVAL="1", JOB_HEARTBEAT_TIMEOUT="3")
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "job_run", str(job.id)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(lambda: LogEntry.objects.filter(job=job, source="stdout", message__contains='"step": 5').exists(), 30)
        assert Job.objects.get(id=job.id).status == "running"
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(5)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
    # The orphaned trainer loses its pipe and ends with the runner.
    wait_for(lambda: process_gone(int(pid_file.read_text())), 10)
    assert services.job_sweep_stale() == 0  # the lease is still fresh right after the kill
    job.refresh_from_db()
    assert job.status == "running"
    wait_for(lambda: services.job_sweep_stale() == 1, 10, interval=0.5)
    job.refresh_from_db()
    assert job.status == "failed"
    assert job.error_message.startswith("worker stopped sending heartbeats (last at ")
    # A redelivered task (acks_late + reject_on_worker_lost) must not run it again.
    assert run_job(job_id=job.id) == "not-claimed"


@pytest.mark.django_db
def test_standalone_restart_requeues_queued_jobs_and_fails_orphaned_running_ones(
    alice, alice_dataset, slow_trainer, queued_job, tasks_not_run
):
    import socket

    queued = queued_job(alice, alice_dataset, slow_trainer, seconds=0)
    orphan = queued_job(alice, alice_dataset, slow_trainer, seconds=0)
    alive = queued_job(alice, alice_dataset, slow_trainer, seconds=0)
    external = queued_job(alice, None, "external")
    dead_pid = 999_999  # above any pid in use here
    assert services.job_claim(job_id=orphan.id, lease_owner=f"{socket.gethostname()}:{dead_pid}:old:run")
    assert services.job_claim(job_id=alive.id, lease_owner="other-host:1:tok:run")
    tasks_not_run()  # the first dispatches, at creation
    assert services.job_redispatch_unfinished() == 2
    assert tasks_not_run() == [(services.RUN_TASK, [queued.id], "training")]
    assert Job.objects.get(id=orphan.id).status == "failed"
    assert "is gone" in Job.objects.get(id=orphan.id).error_message
    assert Job.objects.get(id=alive.id).status == "running"
    assert Job.objects.get(id=external.id).status == "queued"


def _unclaimed_for(job, seconds: float) -> None:
    """As if the job had been queued ``seconds`` ago and nobody had claimed it since."""
    from datetime import timedelta

    from django.utils import timezone

    Job.objects.filter(id=job.id).update(updated_at=timezone.now() - timedelta(seconds=seconds))


@pytest.mark.django_db
def test_the_sweeper_runs_a_queued_job_whose_message_was_lost(
    alice, alice_dataset, slow_trainer, queued_job, tasks_not_run, settings
):
    job = queued_job(alice, alice_dataset, slow_trainer, seconds=0)
    sent_at_creation = len(tasks_not_run())  # drained: that message is lost
    _unclaimed_for(job, settings.QUEUED_REDISPATCH_SECONDS + 1)
    assert services.job_sweep_stale() == 1
    assert tasks_not_run()[sent_at_creation:] == [("jobs.job_run_local", [job.id], slow_trainer.queue)]
    assert run_job(job_id=job.id) == "succeeded"  # what a worker does with the message sent again
    job.refresh_from_db()
    assert job.status == "succeeded", job.error_message
    assert services.job_sweep_stale() == 0


@pytest.mark.django_db
def test_a_lost_job_is_sent_again_once_per_period_not_by_every_sweep(
    alice, alice_dataset, slow_trainer, queued_job, settings
):
    from tests.support.broker import messages_kept_in_the_broker, take_messages

    lost = queued_job(alice, alice_dataset, slow_trainer, seconds=0)
    recent = queued_job(alice, alice_dataset, slow_trainer, seconds=0)
    external = queued_job(alice, None, "external")
    for job in (lost, external):
        _unclaimed_for(job, settings.QUEUED_REDISPATCH_SECONDS + 1)
    _unclaimed_for(recent, settings.QUEUED_REDISPATCH_SECONDS - 30)
    with messages_kept_in_the_broker():
        first, second = services.job_sweep_stale(), services.job_sweep_stale()
        assert take_messages(slow_trainer.queue) == [("jobs.job_run_local", [lost.id])]
        assert (first, second) == (1, 0)

        _unclaimed_for(lost, settings.QUEUED_REDISPATCH_SECONDS + 1)  # a whole period later, still unclaimed
        assert services.job_sweep_stale() == 1
        assert take_messages(slow_trainer.queue) == [("jobs.job_run_local", [lost.id])]
    assert Job.objects.get(id=lost.id).status == "queued"
    assert Job.objects.get(id=external.id).status == "queued"  # external runners are not ours to send


@pytest.mark.django_db
def test_a_message_sent_twice_runs_the_job_once(alice, alice_dataset, slow_trainer, queued_job):
    job = queued_job(alice, alice_dataset, slow_trainer, seconds=0)
    assert run_job(job_id=job.id) != "not-claimed"
    assert run_job(job_id=job.id) == "not-claimed"


def test_the_sweeper_and_poller_are_scheduled_and_the_redispatcher_registered(settings):
    tasks = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert {"jobs.job_sweep_stale", "jobs.job_poll_external_status"} <= tasks
    assert "jobs.services.job_redispatch_unfinished" in settings.UNFINISHED_WORK_REDISPATCHERS
