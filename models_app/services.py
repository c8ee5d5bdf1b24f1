"""Model registry writes: the one path for the API, pages, admin, tasks and commands.

Storage comes first and the database second: a model row never points at objects
that failed to upload, and a row is never deleted while its objects could not be.
"""

import hashlib
import json
import logging
import zlib
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from finetune_studio.events import publish_event_on_commit, user_channel
from finetune_studio.keys import key_is_under, user_key, user_prefix
from finetune_studio.objects import CHUNK_SIZE, ObjectNotFound, StorageError, UploadResult, bucket

from . import artifacts, deploy, registry
from .lineage import job_provenance
from .models import RegisteredModel
from .signals import model_created, send_on_commit

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
METRICS_MAX_BYTES = 16 * 1024 * 1024
LOSS_HISTORY_MAX_POINTS = 2000
EDITABLE_FIELDS = ("name", "description", "base_model", "type", "status")


class ModelConflict(Exception):
    """The request contradicts the model's state (e.g. a job that already has a model); the message says how."""


class InvalidJob(ValueError):
    """The job named does not exist or belongs to someone else."""


def _publish_model_event(model: RegisteredModel, action: str) -> None:
    if action == "created":
        send_on_commit(
            model_created,
            model_id=model.id,
            owner_id=model.owner_id,
            job_id=model.job_id,
            registered_name=model.registered_name.name if model.registered_name_id else None,
            version=model.version,
        )
    publish_event_on_commit(
        user_channel(model.owner_id),
        "model",
        {
            "action": action,
            "id": model.id,
            "name": model.name,
            "status": model.status,
            "job": model.job_id,
            "registered_name": model.registered_name.name if model.registered_name_id else None,
            "version": model.version,
            "total_size": model.total_size,
            "url": f"/models/{model.id}/",
        },
    )


@transaction.atomic
def model_create(
    *,
    owner,
    name: str,
    base_model: str,
    description: str = "",
    type: str = RegisteredModel.Type.LORA,
    status: str = RegisteredModel.Status.PENDING,
    job_id: int | None = None,
    training_metrics: dict | None = None,
    registered_name: str = "",
) -> RegisteredModel:
    """Register a model whose files will be uploaded through ``model_file_add`` (a model trained elsewhere).

    Its objects live under ``users/<owner>/models/<id>/``. A job may carry only one model (ModelConflict);
    it must be the owner's (InvalidJob). The model becomes the next version of ``registered_name``
    (created when new; blank: derived from ``name``).
    """
    if job_id is not None:
        from jobs.models import Job

        if not Job.objects.filter(id=job_id, owner_id=owner.id).exists():
            raise InvalidJob(f"job {job_id} does not exist or is not yours")
    registered = registry.registered_name_lock(
        owner_id=owner.id,
        name=registered_name or registry.default_name_for_model(name, owner_id=owner.id),
    )
    try:
        with transaction.atomic():
            model = RegisteredModel.objects.create(
                registered_name=registered,
                version=registry.version_allocate(registered_name=registered),
                owner=owner,
                name=name,
                description=description,
                base_model=base_model,
                type=type,
                status=status,
                job_id=job_id,
                training_metrics=training_metrics or {},
            )
    except IntegrityError:
        raise ModelConflict(f"job {job_id} already has a model") from None
    model.storage_path = user_key(owner.id, "models", str(model.id)) + "/"
    RegisteredModel.objects.filter(id=model.id).update(storage_path=model.storage_path)
    _publish_model_event(model, "created")
    return model


@transaction.atomic
def model_update(*, model_id: int, changes: dict[str, Any]) -> RegisteredModel:
    """Change the editable fields (name, description, base_model, type, status); the rest is derived."""
    unknown = set(changes) - set(EDITABLE_FIELDS)
    if unknown:
        raise ValueError(f"not editable: {', '.join(sorted(unknown))}")
    model = RegisteredModel.objects.select_for_update().get(id=model_id)
    for field, value in changes.items():
        setattr(model, field, value)
    model.save(update_fields=[*changes, "updated_at"])
    _publish_model_event(model, "updated")
    return model


@transaction.atomic
def model_eval_results_set(*, model_id: int, results: dict) -> None:
    """The latest evaluation summary, written by the evaluations app when an evaluation completes."""
    updated = RegisteredModel.objects.filter(id=model_id).update(eval_results=results)
    if updated:
        model = RegisteredModel.objects.get(id=model_id)
        _publish_model_event(model, "updated")


def model_file_add(*, model_id: int, path: str, upload: UploadResult, content_type: str | None = None) -> dict:
    """Record a file already streamed to ``model.file_key(path)``: merge it into the manifest, re-derive sizes.

    The row is locked while merging so concurrent uploads to one model never lose each other's entries.
    """
    entry = artifacts.manifest_entry(
        path=path, size=upload.size, sha256=upload.sha256, crc32=upload.crc32, content_type=content_type
    )
    with transaction.atomic():
        model = RegisteredModel.objects.select_for_update().get(id=model_id)
        if upload.key != model.file_key(path):
            raise ValueError(f"uploaded key {upload.key!r} is not the model's key for {path!r}")
        model.files = artifacts.merge_entry(model.files, entry)
        derived = artifacts.summarize(model.files, storage_path=model.storage_path)
        model.total_size = derived["total_size"]
        model.lora_adapters_path = derived["lora_adapters_path"]
        model.gguf_path = derived["gguf_path"]
        fields = ["files", "total_size", "lora_adapters_path", "gguf_path", "updated_at"]
        if model.status == RegisteredModel.Status.PENDING:
            model.status = RegisteredModel.Status.UPLOADING
            fields.append("status")
        model.save(update_fields=fields)
        _publish_model_event(model, "updated")
    return entry


def _deletable_prefix(model: RegisteredModel) -> str | None:
    """The model's own prefix, only when it is a real sub-folder of its owner's space (never '' or 'users/')."""
    prefix = model.storage_path
    owner_prefix = user_prefix(model.owner_id)
    if prefix and prefix.endswith("/") and len(prefix) > len(owner_prefix) and key_is_under(prefix[:-1], owner_prefix):
        return prefix
    return None


def model_delete(*, model_id: int) -> int:
    """Delete a model's objects, then its row. Returns how many objects were removed.

    A storage failure raises StorageError and leaves the row (and whatever objects survived) in place,
    so the delete can be retried; it is never reported as done.
    """
    model = RegisteredModel.objects.get(id=model_id)
    models_bucket = bucket("models")
    removed = 0
    prefix = _deletable_prefix(model)
    if prefix:
        removed += models_bucket.delete_prefix(prefix)
    else:
        for item in model.files:
            models_bucket.delete(model.file_key(item["path"]))
            removed += 1
    with transaction.atomic():
        deleted, _ = RegisteredModel.objects.filter(id=model_id).delete()
        if deleted:
            publish_event_on_commit(user_channel(model.owner_id), "model", {"action": "deleted", "id": model_id})
    return removed


# --- Auto-creation when a job succeeds ----------------------------------------------------------


def _checksums(models_bucket, key: str) -> tuple[str, str, int]:
    """sha256, crc32 and size of an object, read once in chunks (bounded memory whatever its size)."""
    digest = hashlib.sha256()
    crc = 0
    size = 0
    for chunk in models_bucket.iter_chunks(key, chunk_size=CHUNK_SIZE):
        digest.update(chunk)
        crc = zlib.crc32(chunk, crc)
        size += len(chunk)
    return digest.hexdigest(), f"{crc:08x}", size


def artifacts_manifest(prefix: str) -> list[dict]:
    """The manifest of every object under a prefix, with checksums computed by streaming each object."""
    models_bucket = bucket("models")
    files = []
    for info in models_bucket.list(prefix):
        path = info.key[len(prefix) :]
        if not path or path.endswith("/"):
            continue
        sha256, crc32, size = _checksums(models_bucket, info.key)
        files.append(artifacts.manifest_entry(path=path, size=size, sha256=sha256, crc32=crc32))
    return sorted(files, key=lambda item: item["path"])


def _number(value) -> float | int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    return None


def _downsample(points: list[dict], limit: int) -> list[dict]:
    if len(points) <= limit:
        return points
    stride = (len(points) - 1) / (limit - 1)
    return [points[round(i * stride)] for i in range(limit)]


def parse_training_metrics(raw: bytes) -> dict:
    """``metrics.json`` → ``{"final": {...}, "loss_history": [{step, loss, ...}], "eval": [...]}``.

    Accepts the trainer contract's ``{"final", "history", "eval"}`` and flat ``{"loss": …}`` files; what
    cannot be read is said in ``warnings`` rather than failing the model.
    """
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return {"final": {}, "loss_history": [], "warnings": [f"{METRICS_FILE} is not valid JSON: {exc}"]}
    if not isinstance(data, dict):
        return {"final": {}, "loss_history": [], "warnings": [f"{METRICS_FILE} is not a JSON object"]}
    final_source = data.get("final") if isinstance(data.get("final"), dict) else data
    final = {key: value for key, value in final_source.items() if _number(value) is not None}
    history = data.get("history") or data.get("loss_history") or data.get("log_history") or []
    points = []
    if isinstance(history, list):
        for index, point in enumerate(history):
            if isinstance(point, dict) and _number(point.get("loss")) is not None:
                cleaned = {k: v for k, v in point.items() if _number(v) is not None}
                cleaned.setdefault("step", index + 1)
                points.append(cleaned)
    metrics = {"final": final, "loss_history": _downsample(points, LOSS_HISTORY_MAX_POINTS)}
    if isinstance(data.get("eval"), list):
        metrics["eval"] = [item for item in data["eval"] if isinstance(item, dict)][:LOSS_HISTORY_MAX_POINTS]
    if isinstance(data.get("run"), dict):
        # The trainer's record of the run (base identity, chat template sha256, hyperparameters): the lineage.
        metrics["run"] = data["run"]
    if points and "loss" not in final:
        final["loss"] = points[-1]["loss"]
    return metrics


def _read_training_metrics(prefix: str) -> dict:
    models_bucket = bucket("models")
    key = prefix + METRICS_FILE
    try:
        size = models_bucket.size(key)
    except ObjectNotFound:
        return {"final": {}, "loss_history": [], "warnings": [f"the job wrote no {METRICS_FILE}"]}
    if size > METRICS_MAX_BYTES:
        return {"final": {}, "loss_history": [], "warnings": [f"{METRICS_FILE} is larger than 16 MiB: not read"]}
    return parse_training_metrics(models_bucket.read_bytes(key))


def _metrics_recorded_by_job(job) -> dict | None:
    """Without a metrics.json, what the jobs app recorded: its final metrics and the streamed metric points."""
    final = {k: v for k, v in (getattr(job, "metrics", None) or {}).items() if _number(v) is not None}
    points_manager = getattr(job, "metric_points", None)
    points = []
    if points_manager is not None:
        for step, data in points_manager.order_by("step").values_list("step", "data"):
            if isinstance(data, dict) and _number(data.get("loss")) is not None:
                points.append({**{k: v for k, v in data.items() if _number(v) is not None}, "step": step})
    if not final and not points:
        return None
    if points and "loss" not in final:
        final["loss"] = points[-1]["loss"]
    return {"final": final, "loss_history": _downsample(points, LOSS_HISTORY_MAX_POINTS), "source": "job"}


def job_artifacts_prefix(job) -> str:
    return job.storage_prefix or user_key(job.owner_id, "jobs", str(job.id)) + "/"


def model_create_from_job(*, job_id: int) -> RegisteredModel | None:
    """Create the one model of a succeeded job; idempotent and safe under concurrent duplicate calls.

    Returns None for a job that did not succeed (or no longer exists). A second call, or one racing
    with the first, returns the model already there: the unique job column decides who wins. Storage
    failures raise StorageError (the Celery task retries them); nothing is written in that case.
    """
    from jobs.models import Job

    job = Job.objects.filter(id=job_id).first()
    if job is None or job.status != Job.Status.SUCCEEDED:
        return None
    existing = RegisteredModel.objects.filter(job_id=job_id).first()
    if existing is not None:
        return existing

    # Storage reads happen outside any transaction: they can take minutes for big weights.
    prefix = job_artifacts_prefix(job)
    files = artifacts_manifest(prefix)
    training_metrics = _read_training_metrics(prefix)
    if not training_metrics["final"] and not training_metrics["loss_history"]:
        training_metrics = _metrics_recorded_by_job(job) or training_metrics
    derived = artifacts.summarize(files, storage_path=prefix)
    try:
        with transaction.atomic():
            registered = registry.registered_name_lock(owner_id=job.owner_id, name=registry.default_name_for_job(job))
            model = RegisteredModel.objects.create(
                registered_name=registered,
                version=registry.version_allocate(registered_name=registered),
                owner_id=job.owner_id,
                job_id=job.id,
                name=f"Model from {job.name}"[:255],
                description=f"Created when training job #{job.id} ({job.name}) succeeded.",
                base_model=job.base_model,
                type=derived["type"] or RegisteredModel.Type.LORA,
                storage_path=prefix,
                lora_adapters_path=derived["lora_adapters_path"],
                gguf_path=derived["gguf_path"],
                files=files,
                training_metrics=training_metrics,
                total_size=derived["total_size"],
                status=RegisteredModel.Status.READY,
                provenance=job_provenance(job),
            )
            _publish_model_event(model, "created")
    except IntegrityError:
        # Another worker created it between our check and our insert.
        return RegisteredModel.objects.get(job_id=job_id)
    logger.info("Registered model %s for job %s (%d files, %d bytes)", model.id, job.id, len(files), model.total_size)
    return model


def models_backfill(*, include_empty: bool = False) -> dict:
    """Create models for succeeded jobs that have none; jobs without any artifact are skipped unless asked.

    Skipping empty prefixes keeps a deleted model (whose files went with it) from coming back empty.
    """
    from jobs.models import Job

    report = {"created": [], "skipped_empty": [], "failed": {}}
    jobs = Job.objects.filter(status=Job.Status.SUCCEEDED, registered_model__isnull=True).order_by("id")
    for job in jobs.iterator():
        try:
            if not include_empty and next(iter(bucket("models").list(job_artifacts_prefix(job))), None) is None:
                report["skipped_empty"].append(job.id)
                continue
            model = model_create_from_job(job_id=job.id)
        except StorageError as exc:
            report["failed"][job.id] = str(exc)
            continue
        if model is not None:
            report["created"].append(model.id)
    return report


# --- Deploying to Ollama ------------------------------------------------------------------------

DEPLOY_CLAIMABLE = (
    RegisteredModel.DeployStatus.IDLE,
    RegisteredModel.DeployStatus.DEPLOYED,
    RegisteredModel.DeployStatus.FAILED,
)


def _publish_deploy_event(model: RegisteredModel) -> None:
    publish_event_on_commit(
        user_channel(model.owner_id),
        "model",
        {
            "action": "deploy",
            "id": model.id,
            "name": model.name,
            "status": model.status,
            "deploy_status": model.deploy_status,
            "deploy_error": model.deploy_error,
            "ollama_name": model.ollama_name,
            "ollama_digest": model.ollama_digest,
            "url": f"/models/{model.id}/",
        },
    )


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
    from .tasks import model_deploy

    model_deploy.delay(model_id)


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
        model_deploy.delay(model_id)
    return len(ids)
