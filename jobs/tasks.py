"""Celery tasks of the jobs app: thin, taking ids; the services and the runner do the work."""

from celery import shared_task
from django.db import InterfaceError, OperationalError

from . import runner, services

# The runner settles its job whatever happens once it holds the lease; retries only cover a
# database that was unreachable before the claim. Time limits: the runner enforces each
# trainer's own timeout, the task limit is the outer bound.
RUN_TIME_LIMIT = 8 * 24 * 3600


@shared_task(
    name="jobs.job_run_local",
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=True,
    max_retries=5,
    time_limit=RUN_TIME_LIMIT,
    ignore_result=True,
)
def job_run_local(job_id: int) -> str:
    return runner.run_job(job_id=job_id)


@shared_task(
    name="jobs.job_sweep_stale",
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=True,
    max_retries=3,
    soft_time_limit=60,
    time_limit=90,
    ignore_result=True,
)
def job_sweep_stale() -> int:
    return services.job_sweep_stale()


@shared_task(
    name="jobs.job_poll_external_status",
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=True,
    max_retries=3,
    soft_time_limit=120,
    time_limit=180,
    ignore_result=True,
)
def job_poll_external_status() -> int:
    return services.job_poll_external_status()
