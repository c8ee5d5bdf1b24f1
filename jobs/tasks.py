"""Celery tasks of the jobs app: thin, taking ids; the services do the work (the run task is the runner app's)."""

from celery import shared_task
from django.db import InterfaceError, OperationalError

from . import services


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
