from celery import shared_task

from . import services


@shared_task(name="models_app.model_create_from_job", acks_late=True, reject_on_worker_lost=True, queue="default")
def model_create_from_job(job_id: int) -> None:
    services.model_create_from_job(job_id=job_id)
