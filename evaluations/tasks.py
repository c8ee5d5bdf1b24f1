"""Celery tasks of evaluations: ids in, a service call, the retry policy. Nothing else."""

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError

from . import services


@shared_task(
    name="evaluations.tasks.evaluation_run",
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=5,
    retry_backoff_max=300,
    max_retries=5,
    soft_time_limit=settings.EVALUATION_TASK_TIME_LIMIT,
    time_limit=settings.EVALUATION_TASK_TIME_LIMIT + 60,
    ignore_result=True,
)
def evaluation_run(evaluation_id: int) -> None:
    """Idempotent: the service claims the evaluation (pending, or running with a lost worker) or does nothing."""
    services.evaluation_execute(evaluation_id=evaluation_id)


@shared_task(
    name="evaluations.tasks.evaluation_sweep_stale",
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=5,
    max_retries=3,
    soft_time_limit=60,
    time_limit=90,
    ignore_result=True,
)
def evaluation_sweep_stale() -> dict:
    return services.evaluation_sweep_stale()
