"""Model registry writes: the one path for the API, pages, admin, tasks and commands.

Storage comes first and the database second: a model row never points at objects
that failed to upload, and a row is never deleted while its objects could not be.
"""

import json
import logging
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from finetune_studio import base_models
from finetune_studio.errors import DomainConflict, DomainInvalid, DomainUnavailable
from finetune_studio.events import event_payload, publish_event_on_commit, user_channel
from finetune_studio.keys import key_is_under, user_key, user_prefix
from finetune_studio.objects import CHUNK_SIZE, ObjectNotFound, StorageError, UploadResult, bucket, streamed_checksums
from finetune_studio.queueing import BROKER_ERRORS
from jobs.models import Job
from jobs.services import InitialAdapter, InitialAdapterRefused

from . import artifacts, registry
from .lineage import job_provenance
from .models import RegisteredModel
from .signals import model_created, send_on_commit

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
METRICS_MAX_BYTES = 16 * 1024 * 1024
LOSS_HISTORY_MAX_POINTS = 2000
EDITABLE_FIELDS = ("name", "description", "base_model", "type", "status")


class ModelsConflict(DomainConflict):
    """The request contradicts the model's state (e.g. a job that already has a model); the message says how."""


class ModelQueueUnavailable(DomainUnavailable):
    """The broker refused a task of the registry; for a deploy, the model's deploy was failed with the reason."""


def enqueue(task, *args) -> None:
    """The registry's one way to queue a task: only the broker's refusal becomes ModelQueueUnavailable."""
    try:
        task.delay(*args)
    except BROKER_ERRORS as exc:
        logger.exception("Could not enqueue %s%r", task.name, args)
        raise ModelQueueUnavailable(f"{exc.__class__.__name__}: {exc}") from None


class ModelsInvalid(DomainInvalid):
    """Input the registry cannot use: ``errors`` maps each field to its messages (e.g. a job that is not yours)."""


READY_NEEDS_FILES = (
    "A model is ready only once it has files: register it (pending), upload its files "
    "(POST /api/v1/models/<id>/files), then set its status to ready."
)


def model_event_publish(model: RegisteredModel, action: str) -> None:
    """The registry's one ``model`` event (created, updated, evaluated, deploy, deleted): always the same keys.

    A creation is also announced to the apps above (``signals.model_created``, after commit).
    """
    registered_name = model.registered_name.name if model.registered_name_id else None
    if action == "created":
        send_on_commit(
            model_created,
            model_id=model.id,
            owner_id=model.owner_id,
            job_id=model.job_id,
            registered_name=registered_name,
            version=model.version,
        )
    publish_event_on_commit(
        user_channel(model.owner_id),
        "model",
        event_payload(
            id=model.id,
            action=action,
            job_id=model.job_id,
            model_id=model.id,
            url=None if action == "deleted" else f"/models/{model.id}/",
            name=model.name,
            registered_name=registered_name,
            version=model.version,
            status=model.status,
            total_size=model.total_size,
            deploy_status=model.deploy_status,
            deploy_error=model.deploy_error,
            ollama_name=model.ollama_name,
            ollama_digest=model.ollama_digest,
            # The live deployment's state, apart from the last attempt's deploy_status (see lineage.live_deployment).
            ollama_still_served=((model.live_deploy_details or {}).get("checked") or {}).get("still_served"),
            deploy_drifted=(model.deploy_parity or {}).get("drifted"),
            eval_results=model.eval_results,
        ),
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

    Its objects live under ``users/<owner>/models/<id>/``. A job may carry only one model (ModelsConflict);
    it must be the owner's (ModelsInvalid). A new record has no files yet, so it cannot start ``ready``
    (ModelsInvalid naming status). The model becomes the next version of ``registered_name``
    (created when new; blank: derived from ``name``).
    """
    if status == RegisteredModel.Status.READY:
        raise ModelsInvalid(errors={"status": [READY_NEEDS_FILES]})
    if job_id is not None:
        from jobs.models import Job

        if not Job.objects.filter(id=job_id, owner_id=owner.id).exists():
            raise ModelsInvalid(errors={"job": [f"job {job_id} does not exist or is not yours"]})
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
        raise ModelsConflict(f"job {job_id} already has a model") from None
    model.storage_path = user_key(owner.id, "models", str(model.id)) + "/"
    RegisteredModel.objects.filter(id=model.id).update(storage_path=model.storage_path)
    model_event_publish(model, "created")
    return model


@transaction.atomic
def model_update(*, model_id: int, changes: dict[str, Any]) -> RegisteredModel:
    """Change the editable fields (name, description, base_model, type, status); the rest is derived.

    A model becomes ``ready`` only when its manifest has files (ModelsInvalid otherwise); the row is locked,
    so a file upload cannot interleave with the check.
    """
    unknown = set(changes) - set(EDITABLE_FIELDS)
    if unknown:
        raise ValueError(f"not editable: {', '.join(sorted(unknown))}")
    model = RegisteredModel.objects.select_for_update().get(id=model_id)
    becomes_ready = changes.get("status") == RegisteredModel.Status.READY and model.status != changes["status"]
    if becomes_ready and not model.files:
        raise ModelsInvalid(errors={"status": [READY_NEEDS_FILES]})
    for field, value in changes.items():
        setattr(model, field, value)
    model.save(update_fields=[*changes, "updated_at"])
    model_event_publish(model, "updated")
    return model


@transaction.atomic
def model_eval_results_set(*, model_id: int, results: dict) -> None:
    """The latest evaluation summary, handed over by the evaluations app when an evaluation completes.

    Publishes the ``model`` event (action ``evaluated``) after commit; a model deleted meanwhile is no error.
    """
    updated = RegisteredModel.objects.filter(id=model_id).update(eval_results=results, updated_at=timezone.now())
    if updated:
        model = RegisteredModel.objects.get(id=model_id)
        model_event_publish(model, "evaluated")


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
        model_event_publish(model, "updated")
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
    so the delete can be retried; it is never reported as done. ModelsConflict while an unfinished job trains the
    version further (its run reads the adapter's files).
    """
    model = RegisteredModel.objects.get(id=model_id)
    continuing = list(
        Job.objects.filter(initial_adapter__model_id=model.id)
        .exclude(status__in=Job.FINISHED)
        .values_list("id", flat=True)
    )
    if continuing:
        jobs = ", ".join(f"#{job_id}" for job_id in continuing)
        raise ModelsConflict(
            f"job {jobs} trains {model.name} further and has not finished: cancel it or let it finish first"
        )
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
            model_event_publish(model, "deleted")
    return removed


def model_initial_adapter(*, owner, model_id: int) -> InitialAdapter:
    """The owner's version ``model_id`` as the adapter a job trains further (jobs call it through the resolver the
    registry sets when it is ready). InitialAdapterRefused, with the reason, for anything else."""
    model = RegisteredModel.objects.select_related("registered_name").filter(id=model_id, owner=owner).first()
    if model is None:
        raise InitialAdapterRefused(f"no model #{model_id} of yours")
    label = f"{model.registered_name.name}:v{model.version}" if model.registered_name else f"model #{model.id}"
    if model.status != RegisteredModel.Status.READY:
        raise InitialAdapterRefused(
            f"{label} is {model.status}, not ready: only a ready version can be trained further"
        )
    if not artifacts.has_lora_adapter(model.files):
        raise InitialAdapterRefused(f"{label} has no LoRA adapter (lora_adapters/adapter_config.json and weights)")
    try:
        base = base_models.base_model_resolve(model.base_model, loadable=True).name
    except base_models.BaseModelRefused:
        base = model.base_model  # the job's base_model check names what is wrong with it
    files = tuple(
        {
            "path": item["path"][len(artifacts.ADAPTERS_DIR) :],
            "key": model.file_key(item["path"]),
            "sha256": item.get("sha256", ""),
        }
        for item in artifacts.adapter_folder_files(model.files)
    )
    registered = model.registered_name.name if model.registered_name else ""
    return InitialAdapter(model_id=model.id, name=label, base_model=base, files=files, registered_name=registered)


# --- Auto-creation when a job succeeds ----------------------------------------------------------


def artifacts_manifest(prefix: str) -> list[dict]:
    """The manifest of every object under a prefix, with checksums computed by streaming each object."""
    models_bucket = bucket("models")
    files = []
    for info in models_bucket.list(prefix):
        path = info.key[len(prefix) :]
        if not path or path.endswith("/"):
            continue
        sums = streamed_checksums(models_bucket.iter_chunks(info.key, chunk_size=CHUNK_SIZE))
        sha256, crc32, size = sums.sha256, sums.crc32, sums.size
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
                # A job that wrote nothing (``models_backfill --include-empty``) leaves a record awaiting files.
                status=RegisteredModel.Status.READY if files else RegisteredModel.Status.PENDING,
                provenance=job_provenance(job),
            )
            model_event_publish(model, "created")
    except IntegrityError:
        # Another worker created it between our check and our insert.
        return RegisteredModel.objects.get(job_id=job_id)
    logger.info("Registered model %s for job %s (%d files, %d bytes)", model.id, job.id, len(files), model.total_size)
    return model


def model_creation_enqueue(*, job_id: int) -> None:
    """A job succeeded (``jobs.signals.job_succeeded``): queue the creation of its model.

    A refusing broker is logged and the job stays succeeded: ``models_backfill`` (on beat) creates the model later.
    """
    from .tasks import model_create_from_job

    try:
        enqueue(model_create_from_job, job_id)
    except ModelQueueUnavailable:
        logger.error("The model of job %s will be created by the next models_backfill", job_id)


def models_backfill(*, include_empty: bool = False, finished_before=None) -> dict:
    """Create models for succeeded jobs that have none; jobs without any artifact are skipped unless asked.

    Skipping empty prefixes keeps a deleted model (whose files went with it) from coming back empty.
    ``finished_before`` (beat's safety net) leaves recent jobs to the creation their success queued.
    """
    from jobs.models import Job

    report = {"created": [], "skipped_empty": [], "failed": {}}
    jobs = Job.objects.filter(status=Job.Status.SUCCEEDED, registered_model__isnull=True).order_by("id")
    if finished_before is not None:
        jobs = jobs.filter(finished_at__lt=finished_before)
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
