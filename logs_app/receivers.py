"""What logs_app does when the jobs app announces something (jobs never imports logs_app)."""

from django.dispatch import receiver

from jobs.signals import job_finished

from . import services


@receiver(job_finished, dispatch_uid="logs_app.end_live_streams")
def end_live_streams(sender, *, job_id: int, status: str, **kwargs) -> None:
    services.log_stream_end(job_id=job_id, status=status)
