"""OpenAI's request bodies, checked, and OpenAI's objects (file, fine_tuning.job, event, list), built.

The objects carry every field OpenAI's SDKs read, plus a ``studio`` object with the studio's own numbers and
pages (the SDKs keep fields they do not know), so a script can go on to the registry, deploy and evaluations.
"""

from __future__ import annotations

from django.urls import reverse
from django.utils import timezone
from rest_framework import serializers

from finetune_studio.api import RefusesUnknownFields
from jobs.models import Dataset, Job

from .. import ids
from ..selectors import Event, Page, ResultsFile, fine_tuned_model_of, results_file_ids
from ..services import AUTO, FINE_TUNE, base_for

MAX_SEED = 2**31 - 1
MAX_SUFFIX = 64  # OpenAI's limit


class FileUploadSerializer(RefusesUnknownFields, serializers.Serializer):
    file = serializers.FileField()
    purpose = serializers.CharField()


class ListQuerySerializer(serializers.Serializer):
    after = serializers.CharField(required=False, max_length=200)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=100, default=20)


class FileListQuerySerializer(ListQuerySerializer):
    limit = serializers.IntegerField(required=False, min_value=1, max_value=10_000, default=10_000)
    order = serializers.ChoiceField(choices=["asc", "desc"], required=False, default="desc")
    purpose = serializers.CharField(required=False)


class AutoOr(serializers.Field):
    """``"auto"`` or a positive number of the given type (OpenAI's hyperparameter values)."""

    def __init__(self, kind: type, **kwargs):
        self.kind = kind
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if data == AUTO:
            return AUTO
        valid = isinstance(data, int | float) and not isinstance(data, bool)
        if self.kind is int:
            valid = valid and float(data).is_integer()
        if not valid or data <= 0:
            kind = "integer" if self.kind is int else "number"
            raise serializers.ValidationError(f'must be "auto" or a positive {kind}, got {data!r}')
        return self.kind(data)

    def to_representation(self, value):
        return value


class HyperparametersSerializer(RefusesUnknownFields, serializers.Serializer):
    n_epochs = AutoOr(int, required=False)
    batch_size = AutoOr(int, required=False)
    learning_rate_multiplier = AutoOr(float, required=False)

    def unknown_field_error(self, name: str) -> str:
        return "Unknown hyperparameter; OpenAI's fine-tuning takes n_epochs, batch_size and learning_rate_multiplier."


class SupervisedSerializer(RefusesUnknownFields, serializers.Serializer):
    hyperparameters = HyperparametersSerializer(required=False)


class MethodSerializer(RefusesUnknownFields, serializers.Serializer):
    type = serializers.CharField()
    supervised = SupervisedSerializer(required=False)
    dpo = serializers.JSONField(required=False)
    reinforcement = serializers.JSONField(required=False)

    def validate_type(self, value):
        if value != "supervised":
            raise serializers.ValidationError(
                f"{value!r} fine-tuning is not offered here: the studio trains supervised (LoRA on chat or "
                "completion records); use type 'supervised'"
            )
        return value


class JobCreateSerializer(RefusesUnknownFields, serializers.Serializer):
    model = serializers.CharField(max_length=200)
    training_file = serializers.CharField(max_length=200)
    hyperparameters = HyperparametersSerializer(required=False)
    method = MethodSerializer(required=False)
    suffix = serializers.CharField(required=False, allow_null=True, allow_blank=True, max_length=MAX_SUFFIX)
    seed = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=MAX_SEED)
    validation_file = serializers.CharField(required=False, allow_null=True, allow_blank=True)
    integrations = serializers.ListField(required=False, allow_null=True)
    metadata = serializers.JSONField(required=False, allow_null=True)

    def validate_integrations(self, value):
        if value:
            raise serializers.ValidationError(
                "integrations (Weights & Biases) are not offered: follow the run's loss in its events or on its "
                "page in the studio"
            )
        return value

    def validate(self, attrs):
        method = attrs.get("method") or {}
        in_method = (method.get("supervised") or {}).get("hyperparameters")
        if in_method is not None and attrs.get("hyperparameters") is not None:
            raise serializers.ValidationError(
                {"hyperparameters": ["give the hyperparameters once: in method.supervised or at the top level"]}
            )
        attrs["hyperparameters"] = in_method if in_method is not None else attrs.get("hyperparameters") or {}
        return attrs


# --- objects -------------------------------------------------------------------------------------------


def _unix(moment) -> int | None:
    return int(moment.timestamp()) if moment else None


def file_object(dataset: Dataset) -> dict:
    return {
        "id": ids.file_id(dataset.id),
        "object": "file",
        "bytes": dataset.size_bytes,
        "created_at": _unix(dataset.created_at),
        "filename": dataset.original_filename or dataset.name,
        "purpose": FINE_TUNE,
        "status": "processed",  # every record was checked before the file was kept
        "status_details": None,
        "expires_at": None,
        "studio": {
            "dataset": dataset.id,
            "name": dataset.name,
            "records": dataset.records,
            "format": dataset.format,
            "task": dataset.task,
            "url": reverse("dataset-detail", args=[dataset.id]),
        },
    }


def results_file_object(results: ResultsFile) -> dict:
    job = results.job
    return {
        "id": ids.results_file_id(job.id),
        "object": "file",
        "bytes": len(results.content),
        "created_at": _unix(job.finished_at),
        "filename": f"step_metrics_{ids.job_id(job.id)}.csv",
        "purpose": "fine-tune-results",
        "status": "processed",
        "status_details": None,
        "expires_at": None,
        "studio": {"job": job.id, "url": reverse("job-detail", args=[job.id])},
    }


_STATUS = {
    Job.Status.PENDING: "validating_files",
    Job.Status.QUEUED: "queued",
    Job.Status.RUNNING: "running",
    Job.Status.SUCCEEDED: "succeeded",
    Job.Status.FAILED: "failed",
    Job.Status.CANCELLED: "cancelled",
}


def _hyperparameters(job: Job) -> dict:
    """OpenAI's three, read back: the multiplier is relative to what "auto" gives (the base's preset, else the
    trainer's default), as the create request's was."""
    values = job.hyperparameters or {}
    auto_rate = ((job.trainer.presets or {}).get(job.base_model) or {}).get("learning_rate") or (
        (job.trainer.hyperparameter_schema or {}).get("learning_rate") or {}
    ).get("default")
    multiplier = None
    if isinstance(values.get("learning_rate"), int | float) and auto_rate:
        multiplier = round(values["learning_rate"] / auto_rate, 6)
    return {
        "n_epochs": values.get("epochs"),
        "batch_size": values.get("batch_size"),
        "learning_rate_multiplier": multiplier,
    }


def job_object(job: Job) -> dict:
    model = fine_tuned_model_of(job=job)
    final = (job.metrics or {}).get("final") or job.metrics or {}
    eta = (job.progress or {}).get("eta_seconds")
    hyperparameters = _hyperparameters(job)
    seed = (job.hyperparameters or {}).get("seed")
    return {
        "id": ids.job_id(job.id),
        "object": "fine_tuning.job",
        "model": job.base_model,
        "created_at": _unix(job.created_at),
        "finished_at": _unix(job.finished_at),
        "status": _STATUS.get(job.status, job.status),
        "fine_tuned_model": ids.model_name(model) if model else None,
        "organization_id": f"user-{job.owner_id}",
        "training_file": ids.file_id(job.dataset_id) if job.dataset_id else "",
        "validation_file": ids.file_id(job.validation_dataset_id) if job.validation_dataset_id else None,
        "hyperparameters": hyperparameters,
        "method": {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
        "seed": seed if isinstance(seed, int) else 0,
        "trained_tokens": final.get("tokens") if isinstance(final.get("tokens"), int) else None,
        "result_files": results_file_ids(job=job),
        "error": _error(job),
        "estimated_finish": (
            _unix(timezone.now()) + int(eta)
            if job.status == Job.Status.RUNNING and isinstance(eta, int | float)
            else None
        ),
        "integrations": [],
        "metadata": job.metadata or None,
        "user_provided_suffix": job.registered_name or None,
        "studio": {
            "job": job.id,
            "trainer": job.trainer.name,
            "url": reverse("job-detail", args=[job.id]),
            "model": model.id if model else None,
            "model_url": reverse("model-detail", args=[model.id]) if model else None,
            "progress": job.progress or {},
        },
    }


def _error(job: Job) -> dict | None:
    if job.status != Job.Status.FAILED:
        return None
    return {"code": "job_failed", "message": job.error_message or "the training run failed", "param": None}


def event_object(event: Event) -> dict:
    return {
        "id": ids.event_id(event.job_id, event.seq),
        "object": "fine_tuning.job.event",
        "created_at": event.created_at,
        "level": event.level,
        "message": event.message,
        "type": event.type,
        "data": event.data,
    }


def list_object(page: Page, build) -> dict:
    data = [build(item) for item in page.items]
    return {
        "object": "list",
        "data": data,
        "has_more": page.has_more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


def checkpoint_object(model) -> dict:
    """A registry version as the checkpoint of the job that trained it: the run's final figures."""
    final = model.final_metrics
    step = final.get("step") if isinstance(final.get("step"), int) else 0
    return {
        "id": ids.checkpoint_id(model.id),
        "object": "fine_tuning.job.checkpoint",
        "created_at": _unix(model.created_at),
        "fine_tuned_model_checkpoint": ids.model_name(model),
        "fine_tuning_job_id": ids.job_id(model.job_id),
        "step_number": step,
        "metrics": {
            "step": step,
            "train_loss": final.get("loss"),
            "valid_loss": final.get("eval_loss"),
            "full_valid_loss": final.get("eval_loss"),
            # The studio's own scores, by their names: exact match is not OpenAI's mean token accuracy.
            **{name: final[name] for name in ("eval_exact_match", "eval_accuracy") if name in final},
        },
    }


def model_object(model) -> dict:
    """A fine-tuned model of the registry as OpenAI's model object."""
    return {
        "id": ids.model_name(model),
        "object": "model",
        "created": _unix(model.created_at),
        "owned_by": f"user-{model.owner_id}",
        "studio": {
            "model": model.id,
            "base_model": model.base_model,
            "status": model.status,
            "url": reverse("model-detail", args=[model.id]),
        },
    }


def base_model_object(name: str) -> dict:
    """A base of the studio's catalogue, or an OpenAI name mapped to one: what ``fine_tuning.jobs.create(model=…)``
    accepts; ``studio.base_model`` is the base it trains."""
    return {"id": name, "object": "model", "created": 0, "owned_by": "studio", "studio": {"base_model": base_for(name)}}
