"""OpenAI's fine-tuning requests carried out by the jobs app's own services.

A file is a dataset (``jobs.services.dataset_create``: every record checked before anything is stored), a
fine-tuning job is a job of the trainer ``settings.OPENAI_COMPAT_TRAINER`` (lora-sft). OpenAI's three
hyperparameters map onto the trainer's; ``"auto"`` leaves the trainer's choice (its preset for the base when it
has one, else its default); a validation file is the job's validation dataset, metadata the job's labels. What the
studio cannot honour (reinforcement, W&B integrations) is refused with the parameter named, never ignored; a
DPO job (method dpo) is a job of ``settings.OPENAI_COMPAT_DPO_TRAINER`` (lora-dpo) on preference records.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile

from evaluations import chat
from evaluations.models import ChatUsage
from finetune_studio import base_models
from finetune_studio.errors import DomainConflict, DomainError, DomainInvalid, DomainNotFound
from finetune_studio.records import ToolCall
from inference.base import Answer, ChatOptions, Delta, InferenceError, ModelNotFound, Refused, Timeout, Unreachable
from inference.endpoints import EndpointUnavailable
from jobs import services as job_services
from jobs.models import Dataset, Job, Trainer
from models_app.models import RegisteredModel

from . import ids

FINE_TUNE = "fine-tune"
AUTO = "auto"
SUPERVISED = "supervised"
DPO = "dpo"
METHODS = (SUPERVISED, DPO)
# OpenAI's hyperparameter → the trainer's (learning_rate_multiplier scales the trainer's learning rate).
_HYPERPARAMETERS = {
    "n_epochs": "epochs",
    "batch_size": "batch_size",
    "learning_rate_multiplier": "learning_rate",
    "beta": "beta",
}
# The jobs app's fields → OpenAI's parameters, for its refusals.
_PARAMS = {
    "base_model": "model",
    "dataset": "training_file",
    "validation_dataset": "validation_file",
    "registered_name": "suffix",
    "trainer": "model",
    "initial_model": "model",
}


class OpenAIRequestInvalid(DomainInvalid):
    """A request OpenAI's API would accept but the studio cannot carry out as asked, or a malformed one."""

    def __init__(self, message: str, *, param: str | None = None):
        super().__init__(message, errors={param: [message]} if param else None)
        self.param = param


def file_create(*, owner, uploaded_file: UploadedFile, purpose: str) -> Dataset:
    """A ``fine-tune`` file becomes a dataset; its records are checked as every upload's are."""
    if purpose != FINE_TUNE:
        raise OpenAIRequestInvalid(
            f"purpose {purpose!r} is not accepted here: the studio keeps training data, upload it with "
            f"purpose {FINE_TUNE!r}",
            param="purpose",
        )
    try:
        return job_services.dataset_create(owner=owner, uploaded_file=uploaded_file)
    except job_services.DatasetInvalid as exc:
        raise OpenAIRequestInvalid(f"{uploaded_file.name}: {exc.location}: {exc.reason}", param="file") from None


def fine_tuning_job_create(
    *,
    owner,
    model: str,
    fine_tuned: RegisteredModel | None = None,
    training_file: Dataset,
    validation_file: Dataset | None = None,
    hyperparameters: dict[str, Any] | None = None,
    suffix: str = "",
    seed: int | None = None,
    metadata: dict | None = None,
    method: str = SUPERVISED,
) -> Job:
    """A job of the studio's fine-tuning trainer for ``method`` on ``training_file``, named after ``suffix`` (its
    registry name): ``OPENAI_COMPAT_TRAINER`` (lora-sft) for supervised, ``OPENAI_COMPAT_DPO_TRAINER`` (lora-dpo)
    for dpo, which needs preference records.

    ``model`` is a base of the studio's catalogue, an OpenAI model name the operator maps to one
    (``OPENAI_COMPAT_MODELS``), or a fine-tuned model (``fine_tuned``, the registry version it names), which the
    job trains further on its own base. Raises OpenAIRequestInvalid naming OpenAI's parameter (``model``,
    ``training_file``, ``hyperparameters.…``).
    """
    if fine_tuned is None and isinstance(ids.parse_model_name(model), tuple):
        raise OpenAIRequestInvalid(
            f"model: {model[:120]!r} is not a fine-tuned model of yours (models.list() names them): a job trains a "
            "base of the studio, or one of your fine-tuned models further",
            param="model",
        )
    base = fine_tuned.base_model if fine_tuned is not None else base_for(model)
    trainer_name = settings.OPENAI_COMPAT_DPO_TRAINER if method == DPO else settings.OPENAI_COMPAT_TRAINER
    if method == DPO and training_file.format != Dataset.Format.PREFERENCE:
        raise OpenAIRequestInvalid(
            f'training_file: method dpo trains on preference records ({{"input": {{"messages": […]}}, '
            f'"preferred_output": […], "non_preferred_output": […]}}); {ids.file_id(training_file.id)} holds '
            f"{training_file.get_format_display() or 'undetected'} records",
            param="training_file",
        )
    trainer = Trainer.objects.filter(name=trainer_name).first()
    given = _trainer_hyperparameters(trainer, base, hyperparameters or {}, seed=seed)
    try:
        return job_services.job_create(
            owner=owner,
            name=(suffix or f"{model} fine-tune")[:200],
            base_model="" if fine_tuned is not None else base,  # training further: the version's own base
            initial_model_id=fine_tuned.id if fine_tuned is not None else None,
            dataset_id=training_file.id,
            trainer_name=trainer_name,
            hyperparameters_given=given,
            registered_name=suffix,
            validation_dataset_id=validation_file.id if validation_file else None,
            metadata=metadata,
        )
    except job_services.JobsInvalid as exc:
        raise _as_openai_refusal(exc.errors) from None


def method_of(job: Job) -> str:
    """OpenAI's ``method.type`` of a job: dpo for the preference trainer's jobs, supervised otherwise."""
    return DPO if job.trainer.name == settings.OPENAI_COMPAT_DPO_TRAINER else SUPERVISED


def base_for(model: str) -> str:
    """The studio's base a job's ``model`` names: the operator's mapping of OpenAI's names, else the name itself."""
    return settings.OPENAI_COMPAT_MODELS.get(model, model)


def _trainer_hyperparameters(trainer: Trainer | None, model: str, given: dict, *, seed: int | None) -> dict:
    """The trainer's hyperparameters for OpenAI's; {} when everything is "auto" (the preset for the base applies)."""
    chosen = {name: value for name, value in given.items() if value != AUTO}
    if not chosen and seed is None:
        return {}
    if trainer is None:
        return {}  # job_create refuses the missing trainer by name
    schema = trainer.hyperparameter_schema or {}
    missing = [_HYPERPARAMETERS[name] for name in chosen if _HYPERPARAMETERS[name] not in schema]
    if missing or (seed is not None and "seed" not in schema):
        raise OpenAIRequestInvalid(
            f"the trainer {trainer.name!r} has no {(missing or ['seed'])[0]} hyperparameter", param="hyperparameters"
        )
    # Start from what "auto" would have given (the base's preset), so one explicit value changes only itself.
    values = dict(_preset_for(trainer, model))
    for name, value in chosen.items():
        if name == "learning_rate_multiplier":
            default = values.get("learning_rate", schema["learning_rate"].get("default"))
            values["learning_rate"] = float(default) * float(value)
        else:
            values[_HYPERPARAMETERS[name]] = value
    if seed is not None:
        values["seed"] = seed
    return values


def _preset_for(trainer: Trainer, model: str) -> dict:
    try:
        name = base_models.base_model_resolve(model, loadable=trainer.loads_base_model).name
    except base_models.BaseModelRefused:
        return {}  # job_create refuses it, naming the bases there are
    return (trainer.presets or {}).get(name) or {}


def _as_openai_refusal(errors: dict) -> OpenAIRequestInvalid:
    """The jobs app's first refusal, with OpenAI's parameter name and the hyperparameter named as OpenAI does."""
    field, messages = next(iter(errors.items()))
    if field == "hyperparameters" and isinstance(messages, dict):
        name, inner = next(iter(messages.items()))
        openai_name = next((key for key, value in _HYPERPARAMETERS.items() if value == name), name)
        param = "seed" if name == "seed" else f"hyperparameters.{openai_name}"
        return OpenAIRequestInvalid(f"{param}: {_first(inner)}", param=param)
    param = _PARAMS.get(field, field)
    hint = ""
    if field == "base_model":
        hint = " (an operator may map OpenAI's model names to the studio's bases with OPENAI_COMPAT_MODELS)"
    return OpenAIRequestInvalid(f"{param}: {_first(messages)}{hint}", param=param)


def _first(messages) -> str:
    return str(messages[0]) if isinstance(messages, list | tuple) and messages else str(messages)


# --- chat completions ------------------------------------------------------------------------------------


class OpenAIModelNotFound(DomainNotFound):
    """No registry version or base of that name that the user may use."""

    param = "model"
    openai_code = "model_not_found"


class OpenAIModelUnavailable(DomainConflict):
    """The model exists, but nothing here answers for it (not deployed, and the local engine may not)."""

    param = "model"


class ChatFailed(DomainError):
    """What serves the model failed or refused; ``status_code`` says which way (400, 502, 503, 504)."""

    def __init__(self, message: str, *, status_code: int):
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True)
class ChatCompletion:
    id: str
    created: int
    target: chat.ChatTarget
    answer: Answer
    tool_calls: tuple[ToolCall, ...]
    finish_reason: str  # OpenAI's: stop | length | tool_calls


def chat_completion_create(
    *,
    user,
    target: chat.ChatTarget,
    messages: tuple[dict, ...],
    options: ChatOptions,
    tools: tuple[dict, ...] = (),
    schema: dict | None = None,
    single_call: bool = False,
) -> ChatCompletion:
    """One answer of ``target`` to ``messages`` for ``user`` (counted in their chat usage); ChatFailed or
    OpenAIModelUnavailable with the reason otherwise.

    ``single_call`` (OpenAI's ``parallel_tool_calls: false``): at most the answer's first tool call.
    """
    with _counted(user, target) as count, _chat_errors(target):
        answer = chat.chat_answer(target=target, messages=messages, options=options, tools=tools, schema=schema)
        count(answer)
    return _completion(_new_completion_id(), int(time.time()), target, answer, single_call)


@dataclass(frozen=True)
class ChatStream:
    """A completion being generated: its id, and ``pieces``: text as it comes, then the whole ChatCompletion."""

    id: str
    created: int
    target: chat.ChatTarget
    pieces: Iterator[str | ChatCompletion]


def chat_completion_stream(
    *,
    user,
    target: chat.ChatTarget,
    messages: tuple[dict, ...],
    options: ChatOptions,
    tools: tuple[dict, ...] = (),
    schema: dict | None = None,
    single_call: bool = False,
) -> ChatStream:
    """``chat_completion_create``'s answer as it is generated. Its errors are raised from ``pieces``: by the first
    piece when the model cannot be asked at all, so a caller that reads one before answering can still refuse."""
    completion_id, created = _new_completion_id(), int(time.time())

    def pieces() -> Iterator[str | ChatCompletion]:
        asked = {"target": target, "messages": messages, "options": options, "tools": tools, "schema": schema}
        with _counted(user, target) as count, _chat_errors(target):
            for piece in chat.chat_stream(**asked):
                if isinstance(piece, Delta):
                    yield piece.text
                else:
                    count(piece)
                    yield _completion(completion_id, created, target, piece, single_call)

    return ChatStream(id=completion_id, created=created, target=target, pieces=pieces())


def _new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def _completion(completion_id: str, created: int, target, answer: Answer, single_call: bool) -> ChatCompletion:
    calls = answer.tool_calls[:1] if single_call else answer.tool_calls
    finish = "tool_calls" if calls else ("length" if answer.finish_reason == "length" else "stop")
    return ChatCompletion(
        id=completion_id, created=created, target=target, answer=answer, tool_calls=calls, finish_reason=finish
    )


@contextmanager
def _counted(user, target: chat.ChatTarget):
    """Counts the request in ``user``'s chat usage: with its answer (``count(answer)``), or as a failure when what
    serves the model failed. A stream the client left early is not counted."""
    answered = []
    try:
        yield answered.append
    except DomainError:
        chat.chat_usage_record(user=user, target=target, answer=None, source=ChatUsage.Source.API)
        raise
    if answered:
        chat.chat_usage_record(user=user, target=target, answer=answered[0], source=ChatUsage.Source.API)


@contextmanager
def _chat_errors(target: chat.ChatTarget):
    """What serving the model raised, as the errors this API answers with (409, 400, 502, 503, 504)."""
    try:
        yield
    except chat.ChatUnavailable as exc:
        raise OpenAIModelUnavailable(str(exc)) from None
    except InferenceError as exc:
        raise _chat_failure(exc, target) from None


def _chat_failure(exc: InferenceError, target: chat.ChatTarget) -> DomainError:
    if isinstance(exc, ModelNotFound) and target.endpoint == chat.OLLAMA_ENDPOINT:
        return OpenAIModelUnavailable(
            f"{target.name} is deployed to Ollama as {target.served_as}, but Ollama does not serve it now ({exc}): "
            "deploy it again from its page"
        )
    if isinstance(exc, EndpointUnavailable | Unreachable):
        return ChatFailed(str(exc), status_code=503)
    if isinstance(exc, Timeout):
        return ChatFailed(str(exc), status_code=504)
    if isinstance(exc, Refused | ModelNotFound):
        return ChatFailed(str(exc), status_code=400)
    return ChatFailed(str(exc), status_code=502)  # BadAnswer: an answer came, but not one that can be read
