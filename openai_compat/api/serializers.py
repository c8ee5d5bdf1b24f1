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
from ..services import AUTO, DPO, FINE_TUNE, METHODS, SUPERVISED, base_for, method_of

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


class DpoHyperparametersSerializer(HyperparametersSerializer):
    beta = AutoOr(float, required=False)

    def unknown_field_error(self, name: str) -> str:
        return "Unknown hyperparameter; DPO takes n_epochs, batch_size, learning_rate_multiplier and beta."


class DpoSerializer(RefusesUnknownFields, serializers.Serializer):
    hyperparameters = DpoHyperparametersSerializer(required=False)


class MethodSerializer(RefusesUnknownFields, serializers.Serializer):
    type = serializers.CharField()
    supervised = SupervisedSerializer(required=False)
    dpo = DpoSerializer(required=False)
    reinforcement = serializers.JSONField(required=False)

    def validate_type(self, value):
        if value not in METHODS:
            raise serializers.ValidationError(
                f"{value!r} fine-tuning is not offered here: the studio trains supervised (LoRA on chat or "
                "completion records) and by preference (dpo, on preference records)"
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
        kind = method.get("type", SUPERVISED)
        other = next((name for name in METHODS if name != kind and method.get(name)), None)
        if other is not None:
            raise serializers.ValidationError({"method": [f"method.{other} is given but the type is {kind!r}"]})
        in_method = (method.get(kind) or {}).get("hyperparameters")
        if in_method is not None and attrs.get("hyperparameters") is not None:
            raise serializers.ValidationError(
                {"hyperparameters": [f"give the hyperparameters once: in method.{kind} or at the top level"]}
            )
        attrs["hyperparameters"] = in_method if in_method is not None else attrs.get("hyperparameters") or {}
        attrs["method_type"] = kind
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
    method = method_of(job)
    if method == DPO:
        hyperparameters["beta"] = (job.hyperparameters or {}).get("beta")
    seed = (job.hyperparameters or {}).get("seed")
    return {
        "id": ids.job_id(job.id),
        "object": "fine_tuning.job",
        # The model it was created with: the base, or the fine-tuned model it trains further.
        "model": ids.initial_model_name(job.initial_adapter) if job.initial_adapter else job.base_model,
        "created_at": _unix(job.created_at),
        "finished_at": _unix(job.finished_at),
        "status": _STATUS.get(job.status, job.status),
        "fine_tuned_model": ids.model_name(model) if model else None,
        "organization_id": f"user-{job.owner_id}",
        "training_file": ids.file_id(job.dataset_id) if job.dataset_id else "",
        "validation_file": ids.file_id(job.validation_dataset_id) if job.validation_dataset_id else None,
        "hyperparameters": hyperparameters,
        "method": {"type": method, method: {"hyperparameters": hyperparameters}},
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
    train_loss = final.get("loss")
    best, epochs = final.get("best_epoch"), final.get("epoch")
    if isinstance(best, int) and isinstance(epochs, int) and 0 < best < epochs and step:
        # The run kept an earlier epoch's adapter (keep_best_epoch): the checkpoint is that epoch's end.
        step = round(step * best / epochs)
        logged = [point for point in model.loss_history if isinstance(point.get("step"), int) and point["step"] <= step]
        train_loss = logged[-1].get("loss") if logged else None
    return {
        "id": ids.checkpoint_id(model.id),
        "object": "fine_tuning.job.checkpoint",
        "created_at": _unix(model.created_at),
        "fine_tuned_model_checkpoint": ids.model_name(model),
        "fine_tuning_job_id": ids.job_id(model.job_id),
        "step_number": step,
        "metrics": {
            "step": step,
            "train_loss": train_loss,
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


# --- chat completions ------------------------------------------------------------------------------------

MAX_STOP = 4  # OpenAI's limit
MAX_INT64 = 2**63 - 1


class StopField(serializers.Field):
    """A string or a list of up to four; always a tuple of non-empty strings once read."""

    def to_internal_value(self, data):
        values = [data] if isinstance(data, str) else data
        if not isinstance(values, list) or not all(isinstance(value, str) and value for value in values):
            raise serializers.ValidationError("must be a non-empty string or a list of them")
        if len(values) > MAX_STOP:
            raise serializers.ValidationError(f"at most {MAX_STOP} stop sequences")
        return tuple(values)

    def to_representation(self, value):
        return list(value)


class StreamOptionsSerializer(RefusesUnknownFields, serializers.Serializer):
    include_usage = serializers.BooleanField(required=False, default=False)


class ChatCompletionSerializer(RefusesUnknownFields, serializers.Serializer):
    """OpenAI's chat completion request, as far as the studio honours it; the rest is refused by name.

    Read into ``messages`` and ``tools`` (checked as a training record's turns are), ``options``
    (an ``inference.base.ChatOptions``), ``schema`` (from ``response_format``) and the streaming flags.
    """

    model = serializers.CharField(max_length=256)
    messages = serializers.JSONField()
    tools = serializers.JSONField(required=False, allow_null=True)
    tool_choice = serializers.JSONField(required=False, allow_null=True)
    parallel_tool_calls = serializers.BooleanField(required=False, allow_null=True)
    max_tokens = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    max_completion_tokens = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    temperature = serializers.FloatField(required=False, allow_null=True, min_value=0.0, max_value=2.0)
    top_p = serializers.FloatField(required=False, allow_null=True, min_value=0.0, max_value=1.0)
    seed = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=MAX_INT64)
    stop = StopField(required=False, allow_null=True)
    n = serializers.IntegerField(required=False, allow_null=True)
    stream = serializers.BooleanField(required=False, allow_null=True)
    stream_options = StreamOptionsSerializer(required=False, allow_null=True)
    response_format = serializers.JSONField(required=False, allow_null=True)
    user = serializers.CharField(required=False, allow_null=True, allow_blank=True, max_length=256)
    store = serializers.BooleanField(required=False, allow_null=True)
    logprobs = serializers.BooleanField(required=False, allow_null=True)
    frequency_penalty = serializers.FloatField(required=False, allow_null=True)
    presence_penalty = serializers.FloatField(required=False, allow_null=True)

    def unknown_field_error(self, name: str) -> str:
        return f"Not offered by the studio's chat completions; they take: {', '.join(field for field in self.fields)}."

    def validate_top_p(self, value):
        if value is not None and value <= 0:
            raise serializers.ValidationError("must be above 0 (1 samples from every token)")
        return value

    def validate_n(self, value):
        if value not in (None, 1):
            raise serializers.ValidationError("the studio answers one choice per request: n must be 1")
        return value

    def validate_store(self, value):
        if value:
            raise serializers.ValidationError("the studio keeps no completions: store must be false")
        return value

    def validate_logprobs(self, value):
        if value:
            raise serializers.ValidationError("log probabilities are not offered: logprobs must be false")
        return value

    def validate_frequency_penalty(self, value):
        return _zero_only(value, "frequency_penalty")

    def validate_presence_penalty(self, value):
        return _zero_only(value, "presence_penalty")

    def validate_tool_choice(self, value):
        if value not in (None, "auto", "none"):
            raise serializers.ValidationError(
                'the studio cannot force a call: tool_choice must be "auto" (the model decides) or "none"'
            )
        return value

    def validate_response_format(self, value) -> dict | None:
        """The JSON schema answers must follow (None: free text)."""
        if value is None:
            return None
        kind = value.get("type") if isinstance(value, dict) else None
        if kind == "text":
            return None
        if kind == "json_object":
            return {"type": "object"}
        if kind == "json_schema":
            described = value.get("json_schema")
            schema = described.get("schema") if isinstance(described, dict) else None
            if not isinstance(schema, dict):
                raise serializers.ValidationError('json_schema needs {"name": …, "schema": {…}}')
            return schema
        raise serializers.ValidationError('type must be "text", "json_object" or "json_schema"')

    def validate(self, attrs):
        from django.conf import settings

        from finetune_studio.records import RecordError, chat_prompt_from_openai
        from inference.base import ChatOptions

        tools = attrs.get("tools")
        if attrs.get("tool_choice") == "none":
            tools = None  # the model is not told of them, so it answers in text
        try:
            messages, tools = chat_prompt_from_openai({"messages": attrs["messages"], "tools": tools})
        except RecordError as exc:
            where = exc.location
            in_tools = where.startswith("request: tool ") or (where == "request" and "tools" in exc.reason)
            param = "tools" if in_tools else "messages"
            raise serializers.ValidationError({param: [f"{exc.location}: {exc.reason}"]}) from None
        given = [attrs.get(name) for name in ("max_completion_tokens", "max_tokens")]
        max_tokens = next((value for value in given if value is not None), None)
        if max_tokens is not None and max_tokens > settings.CHAT_MAX_TOKENS:
            raise serializers.ValidationError(
                {"max_tokens": [f"at most {settings.CHAT_MAX_TOKENS} tokens (the operator's CHAT_MAX_TOKENS)"]}
            )
        if attrs.get("stream_options") and not attrs.get("stream"):
            raise serializers.ValidationError({"stream_options": ["only with stream: true"]})
        temperature = attrs.get("temperature")
        top_p = attrs.get("top_p")
        return {
            "model": attrs["model"],
            "messages": tuple(message.openai_turn() for message in messages),
            "tools": tools,
            "options": ChatOptions(
                # OpenAI's default when none is given is 1 (sampled): scripts that want one answer send 0.
                temperature=1.0 if temperature is None else temperature,
                top_p=1.0 if top_p is None else top_p,
                seed=attrs.get("seed"),
                max_tokens=max_tokens or settings.CHAT_MAX_TOKENS,
                stop=attrs.get("stop") or (),
            ),
            "schema": attrs.get("response_format"),
            "single_call": attrs.get("parallel_tool_calls") is False,
            "stream": bool(attrs.get("stream")),
            "include_usage": bool((attrs.get("stream_options") or {}).get("include_usage")),
        }


def _zero_only(value, name: str):
    if value not in (None, 0, 0.0):
        raise serializers.ValidationError(f"{name} is not offered: give 0 or leave it out")
    return value


def chat_completion_object(completion) -> dict:
    """OpenAI's ``chat.completion``: one choice, its calls in OpenAI's shape, the usage when the server counted."""
    answer = completion.answer
    content = answer.content if answer.content or not completion.tool_calls else None
    message: dict = {"role": "assistant", "content": content, "refusal": None}
    if completion.tool_calls:
        message["tool_calls"] = [call.openai_call() for call in completion.tool_calls]
    return {
        "id": completion.id,
        "object": "chat.completion",
        "created": completion.created,
        "model": completion.target.name,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": completion.finish_reason}],
        "usage": _usage(answer),
        "system_fingerprint": None,
        "service_tier": None,
        "studio": served_by(completion),
    }


def _usage(answer) -> dict | None:
    if answer.prompt_tokens is None or answer.completion_tokens is None:
        return None
    return {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": answer.prompt_tokens + answer.completion_tokens,
    }


def served_by(completion) -> dict:
    target = completion.target
    return {
        "served_by": target.description,
        "endpoint": target.endpoint,
        "model": target.model.id if target.model is not None else None,
        "latency_ms": round(completion.answer.latency_ms, 1),
    }


def chat_completion_events(stream, *, include_usage: bool):
    """OpenAI's stream of ``chat.completion.chunk`` for a ChatStream: the role, the text as it comes, the calls,
    the end, the usage when asked. An error after the first piece ends it with OpenAI's error event."""
    from finetune_studio.errors import DomainError

    common = {
        "id": stream.id,
        "object": "chat.completion.chunk",
        "created": stream.created,
        "model": stream.target.name,
        "system_fingerprint": None,
    }

    def chunk(delta: dict, finish_reason=None) -> dict:
        return {**common, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}

    yield chunk({"role": "assistant", "content": "", "refusal": None})
    try:
        for piece in stream.pieces:
            if isinstance(piece, str):
                yield chunk({"content": piece})
                continue
            if piece.tool_calls:
                calls = [{"index": index, **call.openai_call()} for index, call in enumerate(piece.tool_calls)]
                yield chunk({"tool_calls": calls})
            yield chunk({}, piece.finish_reason)
            if include_usage:
                yield {**common, "choices": [], "usage": _usage(piece.answer), "studio": served_by(piece)}
    except DomainError as exc:
        yield {"error": {"message": str(exc), "type": "server_error", "param": None, "code": None}}
    finally:
        stream.pieces.close()
