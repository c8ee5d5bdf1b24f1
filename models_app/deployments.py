"""Deploying a model's LoRA adapter to Ollama: the state moves (start, finish, fail) and the task's run.

``deploy`` plans and talks to Ollama; this module owns the model's deploy columns, the Ollama-name
lock, and queueing the task. Views, the admin and the task call ``model_deploy_start`` and
``model_deploy_execute``; a parity check calls ``model_deploy_parity_record``.

Two records are kept apart: the live deployment (``ollama_*``, ``deployed_at``, ``live_deploy_details``,
``deploy_parity``), moved only by a deploy that succeeded, and the last attempt (``deploy_status``,
``deploy_error``, ``deploy_started_at``/``deploy_finished_at``, ``deploy_details``). A failed redeploy leaves
the earlier deployment live in Ollama, and its record says so. Every write is a queryset ``update``: a deploy
is not an edit of the model, so ``updated_at`` does not move.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from inference.ollama import OllamaError

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
            deploy_status=RegisteredModel.DeployStatus.FAILED,
            deploy_error=f"could not be queued: {exc}"[:5000],
            deploy_finished_at=timezone.now(),
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
        ).update(deploy_finished_at=timezone.now(), **changes)
        if updated and "ollama_digest" in changes:
            # A parity verdict speaks of one digest: a different model now served makes it stale.
            RegisteredModel.objects.filter(id=model.id).exclude(deploy_parity__digest=changes["ollama_digest"]).update(
                deploy_parity={}
            )
        if updated:
            model.refresh_from_db()
            _publish_deploy_event(model)
    return bool(updated)


def _live_check(model: RegisteredModel, ollama) -> dict | None:
    """After a failed attempt: does Ollama still serve the live deployment under its name and digest?

    The attempt may have failed after its create replaced the model of that name (a smoke prompt that
    failed), so the live record is only as true as this check; None when nothing is live.
    """
    if not model.ollama_name:
        return None
    checked = {"at": timezone.now().isoformat(), "digest": None, "still_served": None, "reason": ""}
    try:
        listed = {deploy.normalize(item["name"]): item for item in ollama.list_models()}
    except OllamaError as exc:  # unknown, said so: the attempt's own error is what the user must see first
        checked["reason"] = f"could not ask Ollama: {exc}"
        return checked
    entry = listed.get(deploy.normalize(model.ollama_name))
    if entry is None:
        checked.update(still_served=False, reason=f"Ollama no longer lists {model.ollama_name!r}")
    elif str(entry.get("digest") or "") != model.ollama_digest:
        checked.update(
            digest=str(entry.get("digest") or ""),
            still_served=False,
            reason=f"Ollama serves another model as {model.ollama_name!r} now (the failed attempt replaced it)",
        )
    else:
        checked.update(digest=model.ollama_digest, still_served=True)
    return checked


def _deploy_fail(model: RegisteredModel, message: str, *, code: str, checked: dict | None = None) -> None:
    """The attempt failed: its outcome is recorded; the live deployment's record stays, with ``checked``."""
    details = {**(model.deploy_details or {}), "error_code": code}
    changes = {"deploy_status": RegisteredModel.DeployStatus.FAILED, "deploy_error": message, "deploy_details": details}
    if checked is not None:
        changes["live_deploy_details"] = {**(model.live_deploy_details or {}), "checked": checked}
    _deploy_finish(model, **changes)
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
        _deploy_fail(model, str(exc), code=exc.code, checked=_live_check(model, ollama))
        return model
    except (OperationalError, InterfaceError):
        raise  # the task retries database hiccups
    except Exception as exc:  # recorded on the model, never a deploy stuck in "deploying"
        logger.exception("Deploy of model %s failed unexpectedly", model_id)
        _deploy_fail(
            model,
            f"unexpected error: {exc.__class__.__name__}: {exc}",
            code="unexpected",
            checked=_live_check(model, ollama),
        )
        return model
    finally:
        ollama.close()
    now = timezone.now()
    live = {
        **result["details"],
        # Verified just now: created, shown, answered the smoke prompt, listed with this digest.
        "checked": {"at": now.isoformat(), "digest": result["digest"], "still_served": True, "reason": ""},
    }
    try:
        with transaction.atomic():
            _deploy_finish(
                model,
                deploy_status=RegisteredModel.DeployStatus.DEPLOYED,
                deploy_error="",
                ollama_name=plan.name,
                ollama_base=plan.base,
                ollama_digest=result["digest"],
                deployed_at=now,
                live_deploy_details=live,
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


class ParityStale(deploy.DeployConflict):
    """The verdict speaks of a digest that is no longer the live deployment's."""


def model_deploy_parity_record(*, model_id: int, digest: str, drifted: bool, summary: dict | None = None) -> dict:
    """Record a parity check's verdict on the live deployment: ``drifted`` marks it on the page, in the API
    and the lineage. ``summary``: what the check measured (agreement, bound, report id…), stored as given.

    Conditional on ``digest`` still being the live one (a conditional UPDATE): a verdict on a deployment that
    has since been replaced raises ParityStale and changes nothing. A later successful deploy with another
    digest clears it. Not an edit of the model: ``updated_at`` does not move.
    """
    parity = {
        **(summary or {}),
        "digest": digest,
        "drifted": bool(drifted),
        "checked_at": timezone.now().isoformat(),
    }
    with transaction.atomic():
        updated = (
            RegisteredModel.objects.filter(id=model_id, ollama_digest=digest)
            .exclude(ollama_digest="")
            .update(deploy_parity=parity)
        )
        if not updated:
            raise ParityStale(f"model #{model_id} is not live in Ollama with digest {digest[:19]}; nothing recorded")
        _publish_deploy_event(RegisteredModel.objects.get(id=model_id))
    return parity
