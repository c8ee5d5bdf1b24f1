"""Thin Celery tasks: ids in, a service call, the retry policy."""

from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from finetune_studio.objects import StorageError

from . import deployments, services


@shared_task(
    name="models_app.model_create_from_job",
    acks_late=True,
    reject_on_worker_lost=True,
    # Only storage hiccups are worth retrying; the service is idempotent, so a redelivery is harmless.
    autoretry_for=(StorageError,),
    retry_backoff=5,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=8,
    # Checksumming multi-GB weights streams them once: allow for it, but not forever.
    soft_time_limit=3 * 3600,
    time_limit=3 * 3600 + 120,
)
def model_create_from_job(job_id: int) -> int | None:
    model = services.model_create_from_job(job_id=job_id)
    return model.id if model else None


@shared_task(
    name="models_app.models_backfill",
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=True,
    max_retries=3,
    soft_time_limit=3 * 3600,
    time_limit=3 * 3600 + 120,
    ignore_result=True,
)
def models_backfill() -> int:
    """Beat's safety net for the creation a job's success queues (a broker that refused it, a lost message)."""
    grace = timezone.now() - timedelta(seconds=settings.MODELS_BACKFILL_GRACE_SECONDS)
    return len(services.models_backfill(finished_before=grace)["created"])


@shared_task(
    # The default queue (CELERY_TASK_DEFAULT_QUEUE): uploads and Ollama's conversion need no GPU worker.
    name="models_app.model_deploy",
    acks_late=True,
    reject_on_worker_lost=True,
    # Ollama and storage failures are recorded on the model by the service (a person presses Deploy again);
    # only database hiccups are retried here. Redelivery is harmless: every deploy step is idempotent.
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=5,
    retry_backoff_max=120,
    max_retries=3,
    soft_time_limit=settings.MODEL_DEPLOY_TIME_LIMIT,
    time_limit=settings.MODEL_DEPLOY_TIME_LIMIT + 60,
    ignore_result=True,
)
def model_deploy(model_id: int) -> None:
    deployments.model_deploy_execute(model_id=model_id)
