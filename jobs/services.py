"""Writes of the jobs app: datasets, trainers, the job lifecycle. The one write path.

Job status moves only here, and only by conditional UPDATE (``filter(id=…, status__in=…)
.update(…)``, then the row count says whether this caller made the move). Whoever made a
move publishes its ``job`` event after commit; the caller that settled a job is the only one
that sends ``signals.job_finished`` (and ``job_succeeded``), so the apps above (logs_app ends
the live streams, models_app creates the model) react once per job without jobs importing them.
The local run is enqueued by task name (``RUN_TASK``, registered by the runner app).
"""

import json
import logging
import os
import random
import socket
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import PurePosixPath
from typing import Any

from celery import current_app
from django.conf import settings
from django.core.files import File
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from finetune_studio import base_models, keys, objects, records
from finetune_studio.errors import DomainConflict, DomainInvalid, DomainUnavailable
from finetune_studio.events import event_payload, publish_event_on_commit, user_channel
from finetune_studio.queueing import BROKER_ERRORS
from finetune_studio.registry_names import InvalidRegisteredName, check_registered_name

from . import hyperparameters
from .models import Dataset, Job, JobMetric, Trainer
from .selectors import job_registered_model, trainer_availability
from .signals import announce, job_finished, job_succeeded

logger = logging.getLogger(__name__)

ACTIVE = (Job.Status.PENDING, Job.Status.QUEUED, Job.Status.RUNNING)
# The Celery task that runs a local job: registered by the runner app (runner.tasks), which sits above jobs.
# The name predates the runner app and stays, for messages already queued and for CELERY_TASK_ROUTES.
RUN_TASK = "jobs.job_run_local"


class JobsInvalid(DomainInvalid):
    """Job input that cannot be used: ``errors`` maps fields to messages (``hyperparameters`` to a field dict)."""

    def __init__(self, errors: dict):
        super().__init__(errors=errors)


class JobsConflict(DomainConflict):
    """The job or dataset is not in a state that allows this (e.g. cancelling a finished job)."""


class DatasetInvalid(JobsInvalid):
    """A dataset file that cannot be used; ``location`` names the first bad line or record."""

    def __init__(self, location: str, reason: str):
        DomainInvalid.__init__(self, f"{location}: {reason}", errors={"file": [f"{location}: {reason}"]})
        self.location = location
        self.reason = reason


# --- Datasets -------------------------------------------------------------------------------------


def dataset_create(*, owner, uploaded_file: UploadedFile, name: str = "") -> Dataset:
    """Validate every record, then stream the file to the datasets bucket and keep its summary.

    Validation reads the upload (held by Django in memory or a temporary file, bounded by the
    upload handler) record by record before anything is written, so a bad file leaves nothing
    in storage. Raises DatasetInvalid (400) or objects.UploadTooLarge (413).
    """
    original = uploaded_file.name or "dataset"
    filename = _storage_filename(original)
    head = next(iter(uploaded_file.chunks(64)), b"")
    uploaded_file.seek(0)
    try:
        file_format = records.detect_format(filename, head)
        summary = _summarise(records.iter_records(uploaded_file.chunks(), file_format))
    except records.RecordError as exc:
        raise DatasetInvalid(exc.location, exc.reason) from None
    if summary.records == 0:
        raise DatasetInvalid("file", "holds no records")
    uploaded_file.seek(0)
    key = keys.user_key(owner.id, "datasets", uuid.uuid4().hex, filename)
    storage = objects.bucket("datasets")
    result = storage.upload(key, uploaded_file, max_bytes=settings.DATASET_MAX_UPLOAD_BYTES)
    display_name = (name or "").strip()[:200] or PurePosixPath(original).stem[:200] or filename
    try:
        return Dataset.objects.create(
            owner=owner,
            name=display_name,
            path=f"datasets/{key}",
            original_filename=original[:255],
            file_format=file_format,
            size_bytes=result.size,
            sha256=result.sha256,
            **summary.fields(),
        )
    except BaseException:
        storage.delete(key)
        raise


def _storage_filename(original: str) -> str:
    path = PurePosixPath(original.replace("\\", "/"))
    suffix = path.suffix.lower() if path.suffix.lower() in (".json", ".jsonl", ".ndjson", ".csv") else ""
    return keys.clean_name(keys.download_filename(path.stem or "dataset", extension=suffix))


@dataclass
class _Summary:
    records: int = 0
    record_format: str = ""
    label_counts: Counter = field(default_factory=Counter)
    tools: set[str] = field(default_factory=set)
    tool_call_answers: int = 0

    def fields(self) -> dict:
        """The Dataset fields the records decide."""
        return {
            "format": self.record_format,
            "task": records.task_of(self.record_format),
            "records": self.records,
            "labels": sorted(self.label_counts),
            "label_counts": dict(sorted(self.label_counts.items())),
            "tools": sorted(self.tools),
            "tool_call_answers": self.tool_call_answers,
        }


def _summarise(items) -> _Summary:
    """Counts, record format, tool names and label counts: labels are counted for classification records only."""
    summary = _Summary()
    for record in items:
        summary.records += 1
        summary.record_format = record.format  # the reader refuses a file whose records change format
        summary.tools.update(record.tool_names)
        summary.tool_call_answers += record.answered_by_tool_call
        if record.task != records.CLASSIFICATION:
            continue
        if record.label in summary.label_counts or len(summary.label_counts) < settings.DATASET_MAX_LABELS:
            summary.label_counts[record.label] += 1
    return summary


def dataset_key(dataset: Dataset) -> str:
    return dataset.path.removeprefix("datasets/")


@transaction.atomic
def dataset_delete(*, dataset_id: int) -> None:
    """Delete a dataset's object, then its row; refused (409) while an unfinished job uses it.

    A storage failure raises StorageError with the row kept (the row is locked meanwhile), so the delete
    can be retried and is never reported as done while the object stays behind.
    """
    dataset = Dataset.objects.select_for_update().get(id=dataset_id)
    uses = Q(dataset=dataset) | Q(validation_dataset=dataset)
    busy = Job.objects.filter(uses, status__in=ACTIVE).order_by("id").values_list("id", flat=True)[:5]
    if busy:
        raise JobsConflict(
            f"dataset is used by unfinished job(s) {', '.join(f'#{i}' for i in busy)}; cancel them first"
        )
    objects.bucket("datasets").delete(dataset_key(dataset))
    dataset.delete()


def dataset_detect_format(*, dataset_id: int) -> Dataset:
    """Read a stored dataset again and record what its records decide: record format, task, labels, tools and
    tool-call answers (rows uploaded before these were detected). Idempotent. Raises DatasetInvalid when
    today's reader refuses the file; the row is kept."""
    dataset = Dataset.objects.get(id=dataset_id)
    chunks = objects.bucket("datasets").iter_chunks(dataset_key(dataset))
    try:
        summary = _summarise(records.iter_records(chunks, dataset.file_format))
    except records.RecordError as exc:
        raise DatasetInvalid(exc.location, exc.reason) from None
    Dataset.objects.filter(id=dataset.id).update(**summary.fields(), updated_at=timezone.now())
    dataset.refresh_from_db()
    return dataset


SPLIT_MIN_FRACTION = 0.01
SPLIT_MAX_FRACTION = 0.9


class DatasetSplitInvalid(JobsInvalid):
    """A split that cannot be made: ``errors`` maps the field to its message."""

    def __init__(self, errors: dict):
        super().__init__(errors={field: [message] for field, message in errors.items()})


def dataset_split(*, dataset_id: int, test_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Split one dataset into two new ones (train, test) of its owner (whoever asks); the original is kept.

    Seeded and reproducible: the same dataset, fraction and seed give the same two files. Classification
    records are stratified (each label keeps its share on both sides, a label with two records or more has
    one on each); other records are shuffled as one group. Reads the file twice (label pass, write pass) so
    memory holds record indices, not records. Both files are JSON lines of the original records.
    """
    dataset = Dataset.objects.get(id=dataset_id)
    errors = {}
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)):
        errors["test_fraction"] = "must be a number"
    elif not SPLIT_MIN_FRACTION <= test_fraction <= SPLIT_MAX_FRACTION:
        errors["test_fraction"] = f"must be between {SPLIT_MIN_FRACTION} and {SPLIT_MAX_FRACTION}"
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
        errors["seed"] = "must be an integer from 0 to 2147483647"
    if not errors and dataset.records < 2:
        errors["test_fraction"] = "a dataset of fewer than two records cannot be split"
    if errors:
        raise DatasetSplitInvalid(errors)

    def read():
        chunks = objects.bucket("datasets").iter_chunks(dataset_key(dataset))
        return records.iter_records(chunks, dataset.file_format)

    groups: dict[str, list[int]] = {}
    try:
        for index, record in enumerate(read()):
            group = record.label if record.task == records.CLASSIFICATION else ""
            groups.setdefault(group, []).append(index)
    except records.RecordError as exc:  # the stored file was valid at upload: only a changed reader gets here
        raise DatasetSplitInvalid({"dataset": f"{exc.location}: {exc.reason}"}) from None
    rng = random.Random(seed)
    test_indices: set[int] = set()
    for label in sorted(groups):
        indices = groups[label]
        rng.shuffle(indices)
        take = round(len(indices) * test_fraction)
        if len(indices) >= 2:
            take = min(len(indices) - 1, max(1, take))
        test_indices.update(indices[:take])
    total = sum(len(indices) for indices in groups.values())
    if not test_indices or len(test_indices) == total:
        raise DatasetSplitInvalid({"test_fraction": f"leaves one side empty with {total} records"})

    stem = PurePosixPath(dataset.original_filename or dataset.name).stem or "dataset"
    with tempfile.TemporaryFile() as train_file, tempfile.TemporaryFile() as test_file:
        for index, record in enumerate(read()):
            target = test_file if index in test_indices else train_file
            target.write(json.dumps(record.raw, ensure_ascii=False).encode() + b"\n")

        def create(side: str, handle) -> Dataset:
            handle.seek(0)
            uploaded = File(handle, name=f"{stem}-{side}.jsonl")
            return dataset_create(
                owner=dataset.owner, uploaded_file=uploaded, name=f"{dataset.name[:170]} ({side}, seed {seed})"
            )

        train = create("train", train_file)
        try:
            test = create("test", test_file)
        except BaseException:  # two datasets or none: never a train set without its test set
            objects.bucket("datasets").delete(dataset_key(train))
            train.delete()
            raise
    return train, test


# --- Training a registry version further -----------------------------------------------------------


@dataclass(frozen=True)
class InitialAdapter:
    """A registry version's LoRA adapter that a job trains further, as the registry resolved it: ``name`` (how its
    owner knows it, ``support-bot:v1``), the ``base_model`` it adapts, its ``files`` in the models bucket
    (``{"path": relative to the adapter folder, "key", "sha256"}``) and its ``registered_name``."""

    model_id: int
    name: str
    base_model: str
    files: tuple[dict, ...]
    registered_name: str = ""  # the version's registered name: where the job's model goes by default (its next)

    def as_json(self) -> dict:
        return {"model_id": self.model_id, "name": self.name, "files": list(self.files)}


class InitialAdapterRefused(Exception):
    """The version cannot be trained further (not the owner's, no LoRA adapter, not ready); the message says why."""


_initial_adapter_resolver = None


def initial_adapter_resolver_set(resolver) -> None:
    """Called by the registry (models_app) when it is ready, so jobs never import it:
    ``resolver(owner=…, model_id=…)`` → InitialAdapter, or InitialAdapterRefused with the reason."""
    global _initial_adapter_resolver
    _initial_adapter_resolver = resolver


def initial_adapter_for(*, owner, model_id: int, trainer: Trainer | None) -> tuple[InitialAdapter | None, str]:
    """(the version's adapter, "") or (None, why this job cannot train it further)."""
    if trainer is not None and not trainer.takes_initial_adapter:
        return None, f"trainer {trainer.name!r} starts every run afresh: it cannot train a model further"
    if _initial_adapter_resolver is None:
        return None, "the model registry is not installed here"
    try:
        return _initial_adapter_resolver(owner=owner, model_id=model_id), ""
    except InitialAdapterRefused as exc:
        return None, str(exc)


# --- Trainers -------------------------------------------------------------------------------------


def trainer_sync_builtin() -> list[str]:
    """Create the built-in trainers that are missing; never touch existing rows (operators edit them)."""
    from trainers.builtin import BUILTIN_TRAINERS

    created = []
    for definition in BUILTIN_TRAINERS:
        hyperparameters.check_schema(definition["hyperparameter_schema"])
        for base, preset in definition["presets"].items():
            if hyperparameters.validate(definition["hyperparameter_schema"], preset)[1]:
                raise hyperparameters.SchemaError(f"{definition['name']}: the preset for {base} does not fit")
        fields = {
            key: definition[key]
            for key in (
                "description",
                "command",
                "hyperparameter_schema",
                "required_modules",
                "loads_base_model",
                "presets",
                "queue",
                "timeout_seconds",
            )
        }
        fields["takes_validation_dataset"] = definition.get("takes_validation_dataset", False)
        fields["record_formats"] = definition.get("record_formats", [])
        fields["takes_initial_adapter"] = definition.get("takes_initial_adapter", False)
        try:
            with transaction.atomic():
                _, was_created = Trainer.objects.get_or_create(name=definition["name"], defaults=fields)
        except IntegrityError:  # created concurrently by another process: theirs stands
            was_created = False
        if was_created:
            created.append(definition["name"])
    return created


# --- Jobs: creation and lifecycle -----------------------------------------------------------------


def job_create(
    *,
    owner,
    name: str,
    base_model: str,
    dataset_id: int | None,
    trainer_name: str,
    hyperparameters_given: Any,
    registered_name: str = "",
    validation_dataset_id: int | None = None,
    metadata: dict | None = None,
    initial_model_id: int | None = None,
) -> Job:
    """Create a job and queue it (local trainers: the run is enqueued after commit).

    ``initial_model_id``: a registry version of the owner's whose LoRA adapter the job trains further instead of
    starting a new one (trainers that take one, ``Trainer.takes_initial_adapter``); a blank ``base_model`` is its
    base (another base is refused), a blank ``registered_name`` its registered name (the result is its next version).

    Raises JobsInvalid (400) naming each field: unknown/unavailable trainer, a base model the studio
    does not allow (finetune_studio/base_models.py; the canonical name is stored), a dataset that is
    not the owner's, hyperparameters that do not fit the trainer's schema. A job that names no
    hyperparameters gets the trainer's preset for its base (``Trainer.presets``); ``job.preset`` names
    the base whose preset the stored hyperparameters hold, a badly spelled
    ``registered_name`` (the name its model will be a version of; blank: derived from ``name``), a
    ``validation_dataset`` that is not the owner's, is the training dataset, holds another task's records or is
    given to a trainer that holds out its own (``Trainer.takes_validation_dataset``), ``metadata`` that is not at
    most 16 string labels.
    """
    errors: dict[str, Any] = {}
    if metadata and (problem := metadata_problem(metadata)):
        errors["metadata"] = [problem]
    if registered_name:
        try:
            registered_name = check_registered_name(registered_name)
        except InvalidRegisteredName as exc:
            errors["registered_name"] = [str(exc)]
    trainer = Trainer.objects.filter(name=trainer_name).first()
    if trainer is None:
        errors["trainer"] = [f"no trainer named {trainer_name!r}"]
    else:
        available, reason = trainer_availability(trainer)
        if not available:
            errors["trainer"] = [f"trainer {trainer.name!r} is unavailable: {reason}"]
    initial = None
    if initial_model_id is not None:
        initial, problem = initial_adapter_for(owner=owner, model_id=initial_model_id, trainer=trainer)
        if problem:
            errors["initial_model"] = [problem]
        else:
            base_model = base_model if base_model.strip() else initial.base_model  # by default on its own base
            registered_name = registered_name or initial.registered_name  # by default its name's next version
    cleaned: dict = {}
    preset_applied = ""
    if not base_model.strip():
        if initial_model_id is None:
            errors["base_model"] = ["required (it may be left out only with initial_model: its base)"]
    elif trainer is not None:
        try:
            base_model = base_models.base_model_resolve(base_model, loadable=trainer.loads_base_model).name
        except base_models.BaseModelRefused as refused:
            errors["base_model"] = [str(refused)]
    if trainer is not None:
        if initial is not None and "base_model" not in errors and base_model != initial.base_model:
            errors["base_model"] = [
                f"{initial.name} is an adapter on {initial.base_model}: train it further on that base, not {base_model}"
            ]
        preset = (trainer.presets or {}).get(base_model) or {}
        if preset and not hyperparameters_given:
            hyperparameters_given = preset  # a job that names no hyperparameters gets its base's preset
        cleaned, hp_errors = hyperparameters.validate(trainer.hyperparameter_schema, hyperparameters_given)
        if hp_errors:
            errors["hyperparameters"] = hp_errors
        elif preset and all(cleaned.get(key) == value for key, value in preset.items()):
            preset_applied = base_model
    needs_dataset = trainer is None or not trainer.is_external
    with transaction.atomic():
        dataset = None
        if dataset_id is not None:
            # Locked so that a concurrent delete of the dataset waits for this job (and then refuses).
            dataset = Dataset.objects.select_for_update().filter(id=dataset_id, owner=owner).first()
            if dataset is None:
                errors["dataset"] = [f"no dataset #{dataset_id} of yours"]
            elif problem := dataset_format_problem(trainer=trainer, dataset=dataset):
                errors["dataset"] = [problem]
        elif needs_dataset:
            errors["dataset"] = ["this trainer needs a dataset"]
        validation = None
        if validation_dataset_id is not None:
            validation, problem = _validation_dataset(owner, validation_dataset_id, trainer=trainer, dataset=dataset)
            if problem:
                errors["validation_dataset"] = [problem]
        if errors:
            raise JobsInvalid(errors)
        job = Job.objects.create(
            owner=owner,
            name=name,
            base_model=base_model,
            dataset=dataset,
            validation_dataset=validation,
            trainer=trainer,
            hyperparameters=cleaned,
            preset=preset_applied,
            registered_name=registered_name or "",
            metadata=metadata or {},
            initial_adapter=initial.as_json() if initial is not None else {},
        )
        Job.objects.filter(id=job.id).update(storage_prefix=keys.user_key(owner.id, "jobs", str(job.id)) + "/")
        job_enqueue(job_id=job.id)
        job.refresh_from_db()
    return job


METADATA_MAX_KEYS, METADATA_MAX_KEY, METADATA_MAX_VALUE = 16, 64, 512


def metadata_problem(metadata) -> str:
    """Why ``metadata`` cannot label a job ("" when it can): OpenAI's rules, 16 string pairs of bounded length."""
    if not isinstance(metadata, dict):
        return "must be an object of string keys and string values"
    if len(metadata) > METADATA_MAX_KEYS:
        return f"has {len(metadata)} keys; at most {METADATA_MAX_KEYS}"
    for key, value in metadata.items():
        if not isinstance(key, str) or not key or len(key) > METADATA_MAX_KEY:
            return f"key {str(key)[:80]!r} must be a string of 1 to {METADATA_MAX_KEY} characters"
        if not isinstance(value, str) or len(value) > METADATA_MAX_VALUE:
            return f"the value of {key!r} must be a string of at most {METADATA_MAX_VALUE} characters"
    return ""


def _validation_dataset(owner, dataset_id: int, *, trainer, dataset) -> tuple[Dataset | None, str]:
    """(the validation dataset, "") or (None, why it cannot be one). Locked as the training dataset is."""
    validation = Dataset.objects.select_for_update().filter(id=dataset_id, owner=owner).first()
    problem = validation_dataset_problem(
        trainer=trainer, dataset=dataset, validation=validation, validation_dataset_id=dataset_id
    )
    return (None, problem) if problem else (validation, "")


def validation_dataset_problem(*, trainer, dataset, validation, validation_dataset_id: int) -> str:
    """Why ``validation`` (the owner's dataset #``validation_dataset_id``, None: not found) cannot validate a run of
    ``trainer`` on ``dataset``; "" when it can. Jobs check it, and sweeps before their first trial."""
    if trainer is not None and not trainer.takes_validation_dataset:
        return f"trainer {trainer.name!r} holds out its own validation records: it takes no validation dataset"
    if validation is None:
        return f"no dataset #{validation_dataset_id} of yours"
    if dataset is not None and validation.id == dataset.id:
        return "is the training dataset: name another one, or none to hold out part of the training records"
    if dataset is not None and validation.task != dataset.task:
        return f"holds {validation.task} records, the training dataset {dataset.task} records"
    return dataset_format_problem(trainer=trainer, dataset=validation)


def dataset_format_problem(*, trainer, dataset: Dataset) -> str:
    """Why ``trainer`` cannot train on (or validate with) ``dataset``'s records ("" when it can): a trainer that
    declares its record formats (``Trainer.record_formats``) is refused a dataset of another format here, at
    creation, not minutes later when its run reads the file."""
    if trainer is None or trainer.takes_format(dataset.format):
        return ""
    holds = f"holds {dataset.get_format_display()} records" if dataset.format else "has no detected record format"
    return (
        f"trainer {trainer.name!r} trains on {trainer.record_formats_display()} records; dataset #{dataset.id} {holds}"
    )


def job_enqueue(*, job_id: int) -> bool:
    """pending → queued; local trainers get their run enqueued on the trainer's queue after commit."""
    now = timezone.now()
    with transaction.atomic():
        moved = Job.objects.filter(id=job_id, status=Job.Status.PENDING).update(
            status=Job.Status.QUEUED, queued_at=now, updated_at=now
        )
        if not moved:
            return False
        job = Job.objects.select_related("trainer").get(id=job_id)
        if not job.trainer.is_external:
            queue = job.trainer.queue
            # Registered before the event: when the broker refuses, the hook raises and the "queued"
            # event that would contradict the failed row is never sent.
            transaction.on_commit(lambda: _dispatch_local_run(job_id, queue))
        _publish(job)
    return True


class JobQueueUnavailable(DomainUnavailable):
    """The broker refused a job's run: the job was failed with the reason, never left queued with nothing queued."""

    def __init__(self, job_id: int, reason: str):
        super().__init__(
            f"The task queue is unavailable, so job #{job_id} was not started and is marked failed; "
            f"try again shortly ({reason})."
        )
        self.job_id = job_id


def _dispatch_local_run(job_id: int, queue: str) -> None:
    """Send the run to the broker once; if it refuses, fail the job and raise JobQueueUnavailable.

    One publish attempt (CELERY_TASK_PUBLISH_RETRY = False), bounded by the broker's socket
    timeouts. The failure is a conditional UPDATE without events: the events would go through
    the same Redis that just refused, each waiting its own timeout, and the caller already
    answers with the reason (a page reload reads the failed row).
    """
    run = current_app.tasks[RUN_TASK]  # a KeyError means no runner is installed (the system check says so)
    try:
        run.apply_async(args=[job_id], queue=queue)
    except BROKER_ERRORS as exc:
        logger.exception("Could not enqueue job %s", job_id)
        reason = f"could not be queued: {exc.__class__.__name__}: {exc}"
        now = timezone.now()
        Job.objects.filter(id=job_id, status=Job.Status.QUEUED).update(
            status=Job.Status.FAILED, finished_at=now, updated_at=now, error_message=reason[:10_000]
        )
        raise JobQueueUnavailable(job_id, reason) from None


# Tells this process from an earlier one that had the same pid (a container's pid 1 after a restart).
_PROCESS_TOKEN = uuid.uuid4().hex[:8]


def lease_owner_name() -> str:
    """``host:pid:process-token:run-token``: whose runner holds a job's lease."""
    return f"{socket.gethostname()}:{os.getpid()}:{_PROCESS_TOKEN}:{uuid.uuid4().hex[:8]}"


def job_claim(*, job_id: int, lease_owner: str) -> bool:
    """queued → running under a lease. Exactly one caller wins; a redelivered task finds nothing to claim."""
    now = timezone.now()
    with transaction.atomic():
        claimed = Job.objects.filter(id=job_id, status=Job.Status.QUEUED).update(
            status=Job.Status.RUNNING,
            lease_owner=lease_owner,
            heartbeat_at=now,
            lease_expires_at=now + timedelta(seconds=settings.JOB_HEARTBEAT_TIMEOUT),
            started_at=now,
            updated_at=now,
        )
        if claimed:
            _publish(Job.objects.get(id=job_id))
    return bool(claimed)


def job_heartbeat(*, job_id: int, lease_owner: str) -> bool:
    """Renew the lease. False when the job is no longer ours to run (cancelled, failed by the sweeper)."""
    now = timezone.now()
    return bool(
        Job.objects.filter(id=job_id, status=Job.Status.RUNNING, lease_owner=lease_owner).update(
            heartbeat_at=now, lease_expires_at=now + timedelta(seconds=settings.JOB_HEARTBEAT_TIMEOUT)
        )
    )


def job_mark_running(*, job_id: int) -> bool:
    """queued → running for external jobs, when the remote runner shows signs of life."""
    now = timezone.now()
    with transaction.atomic():
        moved = Job.objects.filter(id=job_id, status=Job.Status.QUEUED, trainer__name=Trainer.EXTERNAL).update(
            status=Job.Status.RUNNING, started_at=now, updated_at=now
        )
        if moved:
            _publish(Job.objects.get(id=job_id))
    return bool(moved)


def job_cancel(*, job_id: int) -> Job:
    """pending/queued/running → cancelled. A local runner notices within a second and ends the process group."""
    now = timezone.now()
    with transaction.atomic():
        moved = Job.objects.filter(id=job_id, status__in=ACTIVE).update(
            status=Job.Status.CANCELLED, finished_at=now, updated_at=now, error_message="cancelled by the user"
        )
        job = Job.objects.get(id=job_id)
        if not moved:
            raise JobsConflict(f"job #{job_id} is already {job.status}; only unfinished jobs can be cancelled")
        _publish_settled(job)
    return job


def job_complete(
    *,
    job_id: int,
    status: str,
    exit_code: int | None = None,
    error_message: str = "",
    metrics: dict | None = None,
    only_if: Q | None = None,
) -> tuple[Job, bool]:
    """Settle a job as succeeded or failed: the single completion path, whoever reports the end.

    Returns (job, changed). Only the caller whose conditional UPDATE moved the row gets
    changed=True; it publishes the event and, for a success, enqueues the model
    auto-creation after commit. Duplicate or concurrent reports are no-ops.
    """
    if status not in (Job.Status.SUCCEEDED, Job.Status.FAILED):
        raise ValueError(f"a job completes as succeeded or failed, not {status!r}")
    now = timezone.now()
    fields: dict[str, Any] = {
        "status": status,
        "finished_at": now,
        "updated_at": now,
        "exit_code": exit_code,
        "error_message": (error_message or "")[:10_000],
        "lease_expires_at": None,
    }
    if metrics is not None:
        fields["metrics"] = metrics
    rows = Job.objects.filter(id=job_id, status__in=(Job.Status.QUEUED, Job.Status.RUNNING))
    if only_if is not None:
        rows = rows.filter(only_if)
    with transaction.atomic():
        changed = bool(rows.update(**fields))
        job = Job.objects.select_related("trainer").get(id=job_id)
        if not changed:
            return job, False
        if status == Job.Status.SUCCEEDED:
            job.progress = {**job.progress, "percent": 100.0, "eta_seconds": 0}
            Job.objects.filter(id=job_id).update(progress=job.progress)
        _publish_settled(job)
        if status == Job.Status.SUCCEEDED:
            transaction.on_commit(lambda: announce(job_succeeded, job_id=job_id))
    return job, True


def job_complete_external(
    *, job_id: int, status: str, error_message: str = "", metrics: dict | None = None
) -> tuple[Job, bool]:
    """An external runner's report (API or status.json). 409 for a conflicting report or a local job."""
    job = Job.objects.select_related("trainer").get(id=job_id)
    if not job.trainer.is_external:
        raise JobsConflict(f"job #{job_id} runs on the local trainer {job.trainer.name!r}; its runner reports the end")
    if metrics is not None and not isinstance(metrics, dict):
        raise JobsInvalid({"metrics": ["must be a JSON object"]})
    job, changed = job_complete(job_id=job_id, status=status, error_message=error_message, metrics=metrics)
    if changed:
        if metrics:
            transaction.on_commit(lambda: _write_metrics_file(job.storage_prefix, metrics))
        return job, True
    if job.status != status:
        raise JobsConflict(f"job #{job_id} already ended as {job.status}; a report of {status} conflicts")
    return job, False


def _write_metrics_file(prefix: str, metrics: dict) -> None:
    """The model registry reads <prefix>metrics.json: give it the reported metrics unless the runner wrote one."""
    storage = objects.bucket("models")
    key = f"{prefix}metrics.json"
    try:
        if not storage.exists(key):
            storage.put_bytes(key, json.dumps(metrics).encode(), content_type="application/json")
    except objects.StorageError:
        logger.exception("Could not write %s", key)


def job_delete(*, job_id: int) -> None:
    """Delete a finished job (409 otherwise) with its log objects; artifacts stay while a model uses them."""
    with transaction.atomic():
        job = Job.objects.select_for_update().get(id=job_id)
        if job.status not in Job.FINISHED:
            raise JobsConflict(f"job #{job_id} is {job.status}; cancel it before deleting it")
        prefix = job.storage_prefix
        has_model = job_registered_model(job) is not None
        job.delete()
        if prefix:
            transaction.on_commit(lambda: _delete_prefix_logged("logs", prefix))
            if not has_model:
                transaction.on_commit(lambda: _delete_prefix_logged("models", prefix))


def _delete_prefix_logged(alias: str, prefix: str) -> None:
    try:
        objects.bucket(alias).delete_prefix(prefix)
    except objects.StorageError:
        logger.exception("Could not delete %s/%s*", alias, prefix)


# --- Metrics and progress -------------------------------------------------------------------------


def job_lock_for_log_lines(*, job_id: int, with_metrics: bool) -> None:
    """Lock the job's row until commit, for a batch of its log lines; raises Job.DoesNotExist.

    The lock order of log ingestion is the job row first, then its log stream row (logs_app):
    every writer takes them in that order, so none waits in a cycle. Without metrics the lock is
    FOR KEY SHARE, which lets status updates through; a batch with metric lines takes FOR UPDATE
    because ``job_metrics_record`` will (taking it later would be an upgrade two writers can
    deadlock on). Other databases (SQLite) serialise writers themselves.
    """
    table = connection.ops.quote_name(Job._meta.db_table)
    suffix = ""
    if connection.vendor == "postgresql":
        suffix = " FOR UPDATE" if with_metrics else " FOR KEY SHARE"
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id FROM {table} WHERE id = %s{suffix}", [job_id])  # noqa: S608
        if cursor.fetchone() is None:
            raise Job.DoesNotExist(f"job #{job_id} does not exist")


def job_metrics_record(*, job_id: int, points: list[dict]) -> int:
    """Store metric points (one per step) for the chart and update progress and ETA; returns points stored.

    Called by the logs pipeline inside its transaction, after ``job_lock_for_log_lines``. Points
    without an integer ``step`` update nothing. A repeated step is ignored (unique job+step), so replays are harmless.
    """
    usable = [point for point in points if isinstance(point, dict) and _as_step(point.get("step")) is not None]
    if not usable:
        return 0
    with transaction.atomic():
        job = Job.objects.select_for_update().select_related("trainer").get(id=job_id)
        clean_points = list({point["step"]: point for point in map(_clean_point, usable)}.values())
        known = set(
            JobMetric.objects.filter(job_id=job_id, step__in=[p["step"] for p in clean_points]).values_list(
                "step", flat=True
            )
        )
        fresh = [point for point in clean_points if point["step"] not in known]
        # ignore_conflicts: a concurrent writer of the same step wins quietly; the unique constraint decides.
        JobMetric.objects.bulk_create(
            [JobMetric(job_id=job_id, step=point["step"], data=point) for point in fresh], ignore_conflicts=True
        )
        if job.status == Job.Status.QUEUED and job.trainer.is_external:
            job_mark_running(job_id=job_id)
            job.refresh_from_db()
        if job.status != Job.Status.RUNNING or not fresh:
            return len(fresh)
        latest = max(fresh, key=lambda point: point["step"])
        if latest["step"] < (job.progress or {}).get("step", -1):
            return len(fresh)  # late points fill the chart but never move progress backwards
        totals = [p["total_steps"] for p in fresh if isinstance(p.get("total_steps"), (int, float))]
        job.progress = _progress(job, {**({"total_steps": totals[-1]} if totals else {}), **latest})
        Job.objects.filter(id=job_id).update(progress=job.progress, updated_at=timezone.now())
        _publish(job, points=fresh)
    return len(fresh)


def _as_step(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    return None


def _clean_point(point: dict) -> dict:
    clean: dict[str, Any] = {"step": _as_step(point["step"])}
    for key, value in point.items():
        if key == "step" or not isinstance(key, str) or len(key) > 64:
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            clean[key] = value
    return clean


def _progress(job: Job, point: dict) -> dict:
    progress = dict(job.progress or {})
    step = point["step"]
    progress["step"] = step
    total = point.get("total_steps") or progress.get("total_steps")
    if isinstance(total, (int, float)) and total > 0:
        progress["total_steps"] = int(total)
        progress["percent"] = round(min(100.0, 100.0 * step / total), 1)
        elapsed = (timezone.now() - job.started_at).total_seconds() if job.started_at else None
        if elapsed is not None and step > 0:
            progress["eta_seconds"] = max(0, round(elapsed / step * (total - step)))
    for key in ("epoch", "loss", "learning_rate", "accuracy"):
        if key in point:
            progress[key] = point[key]
    return progress


def _publish(job: Job, *, points: list[dict] | None = None) -> None:
    """The one ``job`` event: ``action`` is ``progress`` for new metric points (in ``points``), else ``status``."""
    data = event_payload(
        id=job.id,
        action="progress" if points else "status",
        job_id=job.id,
        url=f"/jobs/{job.id}/",
        status=job.status,
        progress=job.progress,
        exit_code=job.exit_code,
        error_message=job.error_message,
        started_at=_iso(job.started_at),
        finished_at=_iso(job.finished_at),
        points=points or [],
    )
    publish_event_on_commit(user_channel(job.owner_id), "job", data)


def _publish_settled(job: Job) -> None:
    """A final status: the pages' `job` event, then ``job_finished`` (logs_app closes the job's live streams)."""
    _publish(job)
    job_id, owner_id, status = job.id, job.owner_id, job.status
    transaction.on_commit(lambda: announce(job_finished, job_id=job_id, owner_id=owner_id, status=status))


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


# --- Crash safety and external reports ------------------------------------------------------------


def job_sweep_stale() -> int:
    """Fail running local jobs whose runner stopped renewing its lease, and external jobs past their timeout;
    send queued local jobs whose broker message was lost again (``job_redispatch_lost``). Returns jobs acted on."""
    now = timezone.now()
    swept = job_redispatch_lost()
    stale = Job.objects.filter(status=Job.Status.RUNNING, lease_expires_at__lt=now).exclude(
        trainer__name=Trainer.EXTERNAL
    )
    for job_id, heartbeat_at in stale.values_list("id", "heartbeat_at"):
        last = heartbeat_at.isoformat(timespec="seconds") if heartbeat_at else "never"
        _, changed = job_complete(
            job_id=job_id,
            status=Job.Status.FAILED,
            error_message=f"worker stopped sending heartbeats (last at {last}); the job was marked failed",
            only_if=Q(status=Job.Status.RUNNING, lease_expires_at__lt=now),
        )
        swept += changed
    external = Job.objects.filter(
        status__in=(Job.Status.QUEUED, Job.Status.RUNNING), trainer__name=Trainer.EXTERNAL
    ).values_list("id", "queued_at", "trainer__timeout_seconds")
    for job_id, queued_at, timeout in external:
        if queued_at and queued_at + timedelta(seconds=timeout) < now:
            _, changed = job_complete(
                job_id=job_id,
                status=Job.Status.FAILED,
                error_message=f"the external runner sent no completion report within {timeout} s",
            )
            swept += changed
    return swept


def job_redispatch_lost() -> int:
    """Send the run of each local job queued longer than ``QUEUED_REDISPATCH_SECONDS`` again; returns how many.

    A queued job's ``updated_at`` moves only when its state does, so an old one has not been claimed: its
    message may be lost (the broker restarted empty) or still waiting behind other jobs. Which sweeper
    re-sends is decided by a conditional UPDATE of ``updated_at`` (exactly one winner, and the next try only
    a period later); a message too many finds the job claimed already and does nothing (``job_claim``).
    A broker that refuses leaves the job queued for the next sweep: it was queued fine, only the resend failed.
    """
    bound = timezone.now() - timedelta(seconds=settings.QUEUED_REDISPATCH_SECONDS)
    lost = Job.objects.filter(status=Job.Status.QUEUED, updated_at__lt=bound).exclude(trainer__name=Trainer.EXTERNAL)
    resent = 0
    for job_id, queue, seen in lost.values_list("id", "trainer__queue", "updated_at"):
        with transaction.atomic():
            won = Job.objects.filter(id=job_id, status=Job.Status.QUEUED, updated_at=seen).update(
                updated_at=timezone.now()
            )
            if not won:
                continue
        try:
            current_app.tasks[RUN_TASK].apply_async(args=[job_id], queue=queue)
        except BROKER_ERRORS as exc:
            logger.warning("Could not send queued job %s again (%s); the next sweep retries", job_id, exc)
            continue
        logger.info("Job %s was queued since %s without being claimed: its run was sent again", job_id, seen)
        resent += 1
    return resent


def job_poll_external_status() -> int:
    """Read ``status.json`` under each unfinished external job's prefix (logs bucket); returns jobs moved."""
    storage = objects.bucket("logs")
    moved = 0
    unfinished = Job.objects.filter(
        status__in=(Job.Status.QUEUED, Job.Status.RUNNING), trainer__name=Trainer.EXTERNAL
    ).values_list("id", "storage_prefix")
    for job_id, prefix in unfinished:
        key = f"{prefix}status.json"
        try:
            report = json.loads(storage.read_bytes(key))
        except objects.ObjectNotFound:
            continue
        except (objects.StorageError, ValueError) as exc:
            logger.warning("Job %s: cannot read %s (%s)", job_id, key, exc)
            continue
        moved += _apply_status_report(job_id, key, report)
    return moved


def _apply_status_report(job_id: int, key: str, report: Any) -> int:
    status = report.get("status") if isinstance(report, dict) else None
    if status == Job.Status.RUNNING:
        return int(job_mark_running(job_id=job_id))
    if status not in (Job.Status.SUCCEEDED, Job.Status.FAILED):
        logger.warning("Job %s: %s has no usable status (%r)", job_id, key, status)
        return 0
    error_message = report.get("error_message") or ""
    metrics = report.get("metrics") if isinstance(report.get("metrics"), dict) else None
    try:
        _, changed = job_complete_external(
            job_id=job_id, status=status, error_message=str(error_message), metrics=metrics
        )
    except JobsConflict:
        return 0
    return int(changed)


def job_redispatch_unfinished() -> int:
    """At standalone start: re-enqueue queued local jobs; fail running ones whose runner is gone.

    The in-memory broker forgot its messages; the database remembers. A running job whose
    lease expired, or whose lease names a dead process of this host, cannot be resumed.
    """
    count = 0
    queued = Job.objects.filter(status=Job.Status.QUEUED).exclude(trainer__name=Trainer.EXTERNAL)
    for job_id, queue in queued.values_list("id", "trainer__queue"):
        try:
            _dispatch_local_run(job_id, queue)
        except JobQueueUnavailable:
            continue  # failed with the reason by the dispatch; the other jobs still get their chance
        count += 1
    now = timezone.now()
    host = socket.gethostname()
    running = Job.objects.filter(status=Job.Status.RUNNING).exclude(trainer__name=Trainer.EXTERNAL)
    for job_id, owner, expires in running.values_list("id", "lease_owner", "lease_expires_at"):
        owner_host, pid, token, *_ = [*owner.split(":"), "", "", ""]
        gone = owner_host == host and pid.isdigit() and not _lease_process_alive(int(pid), token)
        if gone or (expires and expires < now):
            reason = f"the worker process ({owner}) that ran it is gone" if gone else "its worker lease expired"
            _, changed = job_complete(
                job_id=job_id,
                status=Job.Status.FAILED,
                error_message=f"{reason}; the job was marked failed at restart",
                only_if=Q(lease_owner=owner),
            )
            count += changed
    return count


def _lease_process_alive(pid: int, token: str) -> bool:
    if pid == os.getpid():
        return token == _PROCESS_TOKEN
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
