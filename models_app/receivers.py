"""What the registry does when the jobs app announces something (jobs never imports models_app)."""

from django.dispatch import receiver

from jobs.signals import job_succeeded

from . import services


@receiver(job_succeeded, dispatch_uid="models_app.create_model_of_job")
def create_model_of_job(sender, *, job_id: int, **kwargs) -> None:
    services.model_creation_enqueue(job_id=job_id)
