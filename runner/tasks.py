"""The runner's Celery task: thin, taking an id; ``services.run_job`` does the work."""

from celery import shared_task
from django.db import InterfaceError, OperationalError

from jobs.services import RUN_TASK

from . import services

# The runner settles its job whatever happens once it holds the lease; retries only cover a
# database that was unreachable before the claim. Time limits: the runner enforces each
# trainer's own timeout, the task limit is the outer bound.
RUN_TIME_LIMIT = 8 * 24 * 3600


@shared_task(
    name=RUN_TASK,
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=True,
    max_retries=5,
    time_limit=RUN_TIME_LIMIT,
    ignore_result=True,
)
def job_run_local(job_id: int) -> str:
    return services.run_job(job_id=job_id)
