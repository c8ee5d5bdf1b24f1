"""Thin Celery tasks of the logs app: ids in, a service call, the retry policy."""

import logging

from celery import shared_task
from django.db import OperationalError

from finetune_studio.objects import StorageError

from . import aggregation, retention

logger = logging.getLogger(__name__)

_RETRY_ON = (StorageError, OperationalError)


@shared_task(
    name="logs_app.log_objects_aggregate_all",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    soft_time_limit=60,
    time_limit=90,
)
def log_objects_aggregate_all() -> int:
    """Beat: one aggregation task per external job whose log objects may still grow."""
    job_ids = aggregation.log_aggregation_job_ids()
    for job_id in job_ids:
        log_objects_aggregate_job.delay(job_id)
    return len(job_ids)


@shared_task(
    name="logs_app.log_objects_aggregate_job",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    autoretry_for=_RETRY_ON,
    retry_backoff=2,
    retry_backoff_max=60,
    max_retries=5,
    soft_time_limit=300,
    time_limit=360,
    # Beat enqueues again every few seconds: a stale copy is worth nothing.
    expires=120,
)
def log_objects_aggregate_job(job_id: int) -> int:
    from jobs.models import Job

    try:
        return aggregation.log_objects_aggregate(job_id=job_id)
    except Job.DoesNotExist:
        return 0


@shared_task(
    name="logs_app.log_archive_expired",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    soft_time_limit=120,
    time_limit=180,
)
def log_archive_expired() -> int:
    """Beat: archive the logs of jobs finished more than LOG_RETENTION_DAYS ago, one task per job."""
    job_ids = retention.log_archive_due_job_ids()
    for job_id in job_ids:
        log_archive_job.delay(job_id)
    return len(job_ids)


@shared_task(
    name="logs_app.log_archive_job",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    autoretry_for=(*_RETRY_ON, retention.ArchiveVerificationFailed),
    retry_backoff=30,
    retry_backoff_max=1800,
    max_retries=5,
    soft_time_limit=1800,
    time_limit=1900,
)
def log_archive_job(job_id: int) -> bool:
    from jobs.models import Job

    try:
        return retention.log_archive_job(job_id=job_id)
    except Job.DoesNotExist:
        return False
