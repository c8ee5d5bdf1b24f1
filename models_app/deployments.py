"""Deploying a model's LoRA adapter to Ollama: the state moves (start, finish, fail) and the task's run.

``deploy`` plans and talks to Ollama; this module owns the model's deploy columns, the Ollama-name
lock, and queueing the task. Views, the admin and the task call ``model_deploy_start`` and
``model_deploy_execute``.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from . import deploy
from .models import RegisteredModel
from .services import ModelQueueUnavailable, enqueue, model_event_publish

logger = logging.getLogger(__name__)


DEPLOY_CLAIMABLE = (
    RegisteredModel.DeployStatus.IDLE,
    RegisteredModel.DeployStatus.DEPLOYED,
    RegisteredModel.DeployStatus.FAILED,
)


def _publish_deploy_event(model: RegisteredModel) -> None:
    model_event_publish(model, "deploy")


def _lock_ollama_name(name: str) -> None:
    """Hold the Ollama name until commit (PostgreSQL; SQLite runs one write transaction at a time)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"ollama-name:{deploy.normalize(name)}"])


def _check_name_free(model: RegisteredModel, name: str) -> None:
    others = RegisteredModel.objects.exclude(id=model.id)
    wanted = {name, deploy.normalize(name)}
    clash = others.filter(
        Q(ollama_name__in=wanted)
        | Q(deploy_status=RegisteredModel.DeployStatus.DEPLOYING, deploy_details__target__in=list(wanted))
    )
    if clash.exists():
        raise deploy.DeployConflict(
            f"another registered model is deployed (or deploying) as {name!r}; choose another name"
        )


def model_deploy_start(*, model_id: int, ollama_name: str | None = None, base: str | None = None) -> RegisteredModel:
    """Check everything that needs no upload (``deploy.plan``: raises DeployRefused with a reason and an HTTP
    status), then move the model to ``deploying`` and queue ``model_deploy`` after commit.

    A model already deploying is a DeployConflict, unless its deploy is older than the task's time limit
    (its worker is gone): that one may be started again.
    """
    model = RegisteredModel.objects.select_related("job").get(id=model_id)
    # Network checks run outside any transaction: Ollama may take seconds to answer.
    ollama = deploy.client()
    try:
        plan = deploy.plan(model, name=ollama_name, base=base, ollama=ollama)
    finally:
        ollama.close()
    now = timezone.now()
    stale = now - timedelta(seconds=settings.MODEL_DEPLOY_STALE_SECONDS)
    claimable = Q(deploy_status__in=DEPLOY_CLAIMABLE) | Q(
        deploy_status=RegisteredModel.DeployStatus.DEPLOYING, deploy_started_at__lt=stale
    )
    with transaction.atomic():
        # Two models asking for one new name at once: the second waits here, then sees the first's claim.
        _lock_ollama_name(plan.name)
        _check_name_free(model, plan.name)
        updated = RegisteredModel.objects.filter(claimable, id=model_id).update(
            deploy_status=RegisteredModel.DeployStatus.DEPLOYING,
            deploy_error="",
            deploy_started_at=now,
            deploy_details={"target": plan.name, "base": plan.base, "requested_at": now.isoformat()},
        )
        if not updated:
            raise deploy.DeployConflict("a deploy of this model is already running; wait for it to finish")
        model.refresh_from_db()
        _publish_deploy_event(model)
        transaction.on_commit(lambda: _enqueue_deploy(model_id))
    return model


def _enqueue_deploy(model_id: int) -> None:
    """Queue the deploy task; when the broker refuses, the deploy is failed with the reason and the caller told.

    The failure is a conditional UPDATE without an event: the event would go through the Redis that just refused.
    """
    from .tasks import model_deploy

    try:
        enqueue(model_deploy, model_id)
    except ModelQueueUnavailable as exc:
        RegisteredModel.objects.filter(id=model_id, deploy_status=RegisteredModel.DeployStatus.DEPLOYING).update(
            deploy_status=RegisteredModel.DeployStatus.FAILED, deploy_error=f"could not be queued: {exc}"[:5000]
        )
        raise ModelQueueUnavailable(
            f"The task queue is unavailable, so the deploy of model #{model_id} was not started; try again shortly."
        ) from None


def _deploy_finish(model: RegisteredModel, **changes) -> bool:
    """Only the deploy that was started (same start time) may finish: a restarted one supersedes it."""
    with transaction.atomic():
        updated = RegisteredModel.objects.filter(
            id=model.id,
            deploy_status=RegisteredModel.DeployStatus.DEPLOYING,
            deploy_started_at=model.deploy_started_at,
        ).update(**changes)
        if updated:
            model.refresh_from_db()
            _publish_deploy_event(model)
    return bool(updated)


def _deploy_fail(model: RegisteredModel, message: str, *, code: str) -> None:
    details = {**(model.deploy_details or {}), "error_code": code}
    _deploy_finish(
        model, deploy_status=RegisteredModel.DeployStatus.FAILED, deploy_error=message, deploy_details=details
    )
    logger.info("Deploy of model %s to Ollama failed (%s): %s", model.id, code, message)


def model_deploy_execute(*, model_id: int) -> RegisteredModel | None:
    """Run a started deploy: plan again (things may have changed since the request), upload the blobs Ollama
    lacks, create, verify; then ``deployed`` with the Ollama name and digest, or ``failed`` with the reason.

    Idempotent: a redelivered task re-runs every step (present blobs are skipped, create replaces the model
    it made). Does nothing for a model that is not deploying.
    """
    model = (
        RegisteredModel.objects.select_related("job")
        .filter(id=model_id, deploy_status=RegisteredModel.DeployStatus.DEPLOYING)
        .first()
    )
    if model is None:
        return None
    details = model.deploy_details or {}
    ollama = deploy.client()
    try:
        plan = deploy.plan(model, name=details.get("target"), base=details.get("base"), ollama=ollama)
        result = deploy.execute(model, plan, ollama=ollama)
    except deploy.DeployRefused as exc:
        _deploy_fail(model, str(exc), code=exc.code)
        return model
    except (OperationalError, InterfaceError):
        raise  # the task retries database hiccups
    except Exception as exc:  # recorded on the model, never a deploy stuck in "deploying"
        logger.exception("Deploy of model %s failed unexpectedly", model_id)
        _deploy_fail(model, f"unexpected error: {exc.__class__.__name__}: {exc}", code="unexpected")
        return model
    finally:
        ollama.close()
    try:
        with transaction.atomic():
            _deploy_finish(
                model,
                deploy_status=RegisteredModel.DeployStatus.DEPLOYED,
                deploy_error="",
                ollama_name=plan.name,
                ollama_base=plan.base,
                ollama_digest=result["digest"],
                deployed_at=timezone.now(),
                deploy_details=result["details"],
            )
    except IntegrityError:
        _deploy_fail(model, f"another registered model took the name {plan.name!r} meanwhile", code="conflict")
    return model


def model_deploy_redispatch_unfinished() -> int:
    """At the start of a standalone process: its in-memory queue forgot every deploy still marked deploying."""
    from .tasks import model_deploy

    ids = list(
        RegisteredModel.objects.filter(deploy_status=RegisteredModel.DeployStatus.DEPLOYING).values_list(
            "id", flat=True
        )
    )
    for model_id in ids:
        enqueue(model_deploy, model_id)
    return len(ids)
