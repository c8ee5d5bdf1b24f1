"""The lower apps' signals, turned into webhook events. Thin: build the payload, call one service."""

from django.conf import settings

from .services import webhook_event_publish


def _on_job_finished(sender, *, job_id, owner_id, status, **kwargs) -> None:
    from jobs.models import Job

    job = Job.objects.filter(id=job_id).values("id", "name", "status", "finished_at", "registered_name").first()
    if job is None:
        return
    data = {**job, "finished_at": job["finished_at"].isoformat() if job["finished_at"] else None}
    webhook_event_publish(owner_id=owner_id, event="job.finished", data={**data, "url": f"/api/v1/jobs/{job_id}"})


def _on_model_created(sender, *, model_id, owner_id, registered_name, version, job_id=None, **kwargs) -> None:
    webhook_event_publish(
        owner_id=owner_id,
        event="model.created",
        data={
            "id": model_id,
            "registered_name": registered_name,
            "version": version,
            "job": job_id,
            "url": f"/api/v1/models/{model_id}",
        },
    )


def _on_evaluation_finished(sender, *, evaluation_id, owner_id, model_id, status, verdict=None, **kwargs) -> None:
    if status != "completed":
        return
    webhook_event_publish(
        owner_id=owner_id,
        event="evaluation.completed",
        data={
            "id": evaluation_id,
            "model": model_id,
            "verdict": verdict,
            "url": f"/api/v1/evaluations/{evaluation_id}",
        },
    )


def _on_alias_moved(sender, *, owner_id, name, alias, from_version, to_version, overridden=False, **kwargs) -> None:
    webhook_event_publish(
        owner_id=owner_id,
        event="alias.moved",
        data={
            "registered_name": name,
            "alias": alias,
            "from_version": from_version,
            "to_version": to_version,
            "overridden": overridden,
            "url": f"/api/v1/registry/{name}/aliases/{alias}",
        },
    )


def connect() -> None:
    from evaluations.signals import evaluation_finished
    from jobs.signals import job_finished
    from models_app.signals import alias_moved, model_created

    if not getattr(settings, "WEBHOOKS_ENABLED", True):
        return
    job_finished.connect(_on_job_finished, dispatch_uid="webhooks.job_finished")
    model_created.connect(_on_model_created, dispatch_uid="webhooks.model_created")
    evaluation_finished.connect(_on_evaluation_finished, dispatch_uid="webhooks.evaluation_finished")
    alias_moved.connect(_on_alias_moved, dispatch_uid="webhooks.alias_moved")
