"""Reading the studio's datasets, jobs, logs and registry as OpenAI's objects and cursor-paged lists.

OpenAI pages by object id: ``after`` names the last object a client has, the next page holds the objects
after it in the list's order (newest first unless asked otherwise). Keyset on the id, never OFFSET, so a page
neither repeats nor skips objects created meanwhile.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from django.conf import settings
from django.db.models import JSONField, QuerySet, Value
from django.db.models.fields.json import KeyTransform, KeyTransformExact

from evaluations import chat
from finetune_studio import base_models
from jobs import selectors as job_selectors
from jobs.models import Dataset, Job
from logs_app import selectors as log_selectors
from logs_app.parsing import metric_point
from models_app import selectors as model_selectors
from models_app.models import RegisteredModel

from . import ids
from .services import OpenAIModelNotFound, OpenAIModelUnavailable, OpenAIRequestInvalid, base_for


@dataclass(frozen=True)
class Page:
    items: list
    has_more: bool


def _cursor(after: str | None, parse, what: str) -> int | None:
    if after is None:
        return None
    number = parse(after)
    if number is None:
        raise OpenAIRequestInvalid(f"after: {after[:80]!r} is not a {what} id", param="after")
    return number


def _keyset_page(rows: QuerySet, *, after: int | None, limit: int, descending: bool) -> Page:
    if after is not None:
        rows = rows.filter(id__lt=after) if descending else rows.filter(id__gt=after)
    rows = rows.order_by("-id" if descending else "id")
    items = list(rows[: limit + 1])
    return Page(items=items[:limit], has_more=len(items) > limit)


def files_page(*, user, after: str | None, limit: int, descending: bool = True) -> Page:
    """The user's datasets as files (staff: everyone's)."""
    after_id = _cursor(after, ids.parse_file_id, "file")
    return _keyset_page(job_selectors.datasets_visible(user=user), after=after_id, limit=limit, descending=descending)


def file_get(*, user, file_id: str) -> Dataset:
    number = ids.parse_file_id(file_id)
    if number is None:
        raise job_selectors.JobsNotFound(f"No such file: {file_id[:80]!r}.")
    return job_selectors.dataset_get(user=user, dataset_id=number)


def fine_tuned_model_of(*, job: Job) -> RegisteredModel | None:
    """The registry version a job produced, once it succeeded: its ``fine_tuned_model``, checkpoint and results."""
    return job_selectors.job_registered_model(job) if job.status == Job.Status.SUCCEEDED else None


@dataclass(frozen=True)
class ResultsFile:
    """A succeeded job's figures per step, as OpenAI's results file: ``step,train_loss,valid_loss,<score>``."""

    job: Job
    content: bytes


def results_file_get(*, user, file_id: str) -> ResultsFile | None:
    """The results file ``file-results-<job>`` of a job the user may see (None: not such an id, or no results)."""
    number = ids.parse_results_file_id(file_id)
    if number is None:
        return None
    job = job_selectors.job_get(user=user, job_id=number)
    model = fine_tuned_model_of(job=job)
    if model is None or not model.loss_history:
        raise job_selectors.JobsNotFound(f"No such file: {file_id[:80]!r}.")
    return ResultsFile(job=job, content=_results_csv(model.training_metrics or {}))


def results_file_ids(*, job: Job) -> list[str]:
    """OpenAI's ``result_files`` of a job: its results file once it succeeded with a loss history."""
    model = fine_tuned_model_of(job=job)
    return [ids.results_file_id(job.id)] if model is not None and model.loss_history else []


def _results_csv(metrics: dict) -> bytes:
    """One row per logged step; the validation after epoch ``e`` sits on the step that ended it."""
    final = metrics.get("final") or {}
    history = metrics.get("loss_history") or []
    evaluations = [point for point in metrics.get("eval") or [] if isinstance(point.get("epoch"), int | float)]
    score = next((name for name in ("eval_exact_match", "eval_accuracy") if any(name in p for p in evaluations)), "")
    total, epochs = final.get("total_steps"), final.get("epoch")
    steps_per_epoch = total / epochs if isinstance(total, int | float) and isinstance(epochs, int | float) else None
    rows = {int(point["step"]): {"train_loss": point.get("loss")} for point in history if "step" in point}
    for point in evaluations:
        if steps_per_epoch:
            row = rows.setdefault(round(point["epoch"] * steps_per_epoch), {})
            row.update(valid_loss=point.get("eval_loss"), **({score: point.get(score)} if score else {}))
    columns = ["train_loss", "valid_loss"] + ([score] if score else [])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["step", *columns])
    for step in sorted(rows):
        writer.writerow([step, *("" if rows[step].get(name) is None else rows[step][name] for name in columns)])
    return buffer.getvalue().encode()


def job_file_get(*, user, file_id: str, param: str) -> Dataset:
    """A file a job names (``training_file``, ``validation_file``): not one of the user's is a 400 on ``param``."""
    try:
        return file_get(user=user, file_id=file_id)
    except job_selectors.JobsNotFound:
        raise OpenAIRequestInvalid(
            f"{param}: no file {file_id[:80]!r} of yours (upload it with POST /files)", param=param
        ) from None


def fine_tuning_jobs_page(*, user, after: str | None, limit: int, metadata: dict | None = None) -> Page:
    """The user's jobs of any trainer, newest first: the studio's pages show them all, so does this list.

    ``metadata``: only jobs labelled with every one of these pairs; ``{}``: only jobs without labels.
    """
    after_id = _cursor(after, ids.parse_job_id, "fine-tuning job")
    rows = job_selectors.jobs_visible(user=user).select_related("registered_model__registered_name")
    if metadata == {}:
        rows = rows.filter(metadata={})
    for key, value in (metadata or {}).items():
        # The key as one JSON key (never split on "__" as a lookup path would be), the value as a JSON string.
        rows = rows.filter(KeyTransformExact(KeyTransform(key, "metadata"), Value(value, output_field=JSONField())))
    return _keyset_page(rows, after=after_id, limit=limit, descending=True)


def fine_tuning_job_get(*, user, job_id: str) -> Job:
    number = ids.parse_job_id(job_id)
    if number is None:
        raise job_selectors.JobsNotFound(f"No such fine-tuning job: {job_id[:80]!r}.")
    return job_selectors.job_get(user=user, job_id=number)


def fine_tuning_job_checkpoints(*, job: Job, after: str | None) -> Page:
    """The studio keeps a run's final adapter only: a succeeded job's registry version is its one checkpoint
    (so any ``after`` is past the end)."""
    model = fine_tuned_model_of(job=job)
    return Page(items=[model] if model is not None and after is None else [], has_more=False)


@dataclass(frozen=True)
class Event:
    job_id: int
    seq: int
    created_at: int
    level: str  # info | warn | error
    message: str
    type: str  # message | metrics
    data: dict


_LEVELS = {"DEBUG": "info", "INFO": "info", "WARN": "warn", "ERROR": "error"}


def fine_tuning_job_events(*, job: Job, after: str | None, limit: int) -> Page:
    """The job's log as OpenAI's events, newest first; a metrics line is a ``metrics`` event with its figures."""
    before = None
    if after is not None:
        parsed = ids.parse_event_id(after)
        if parsed is None or parsed[0] != job.id:
            raise OpenAIRequestInvalid(f"after: {after[:80]!r} is not an event of {ids.job_id(job.id)}", param="after")
        before = parsed[1]
    stream = log_selectors.log_stream_of(job.id)
    if stream is None:
        return Page(items=[], has_more=False)
    if before is None:
        before = stream.last_seq + 1
    lines = log_selectors.log_lines(job.id, before=before, limit=limit + 1, stream=stream)
    newest_first = list(reversed(lines))
    return Page(items=[_event(job.id, line) for line in newest_first[:limit]], has_more=len(lines) > limit)


def _event(job_id: int, line: dict) -> Event:
    point = metric_point(line["message"])
    common = {"job_id": job_id, "seq": line["seq"], "created_at": int(line["timestamp"].timestamp())}
    if point is None:
        return Event(
            **common, level=_LEVELS.get(line["level"], "info"), message=line["message"], type="message", data={}
        )
    return Event(**common, level="info", message=_metric_message(point), type="metrics", data=_metric_data(point))


def _metric_data(point: dict) -> dict:
    """The trainer's figures, plus OpenAI's names for the two a script plots (train_loss, valid_loss)."""
    data = dict(point)
    if "loss" in point:
        data["train_loss"] = point["loss"]
    if "eval_loss" in point:
        data["valid_loss"] = point["eval_loss"]
    return data


def _metric_message(point: dict) -> str:
    if "step" in point:
        total = f"/{point['total_steps']}" if "total_steps" in point else ""
        loss = f": training loss={point['loss']}" if point.get("loss") is not None else ""
        return f"Step {point['step']}{total}{loss}"
    if "eval_loss" in point:
        return f"Epoch {point.get('epoch', '?')}: validation loss={point['eval_loss']}"
    return "Metrics"


# --- models --------------------------------------------------------------------------------------------


def base_model_names() -> list[str]:
    """What a fine-tuning job's ``model`` may be: the studio's bases by name, then the OpenAI names the operator
    maps to one of them (``OPENAI_COMPAT_MODELS``)."""
    names = [entry.name for entry in base_models.base_model_catalogue()]
    return names + [alias for alias, base in settings.OPENAI_COMPAT_MODELS.items() if base in names]


def fine_tuned_models(*, user) -> list[RegisteredModel]:
    """The user's registry models (staff: everyone's), newest first."""
    return list(model_selectors.model_list(user=user).order_by("-id"))


def fine_tuned_model_get(*, user, name: str) -> RegisteredModel | None:
    """The registry model ``name`` (``<registered name>:v<version>`` or ``model-<id>``) the user may see, else None.

    A staff member who can see two users' ``support-bot:v1`` gets their own first.
    """
    parsed = ids.parse_model_name(name)
    if parsed is None:
        return None
    rows = model_selectors.models_visible(user=user)
    if isinstance(parsed, int):
        rows = rows.filter(id=parsed, registered_name__isnull=True)
    else:
        rows = rows.filter(registered_name__name=parsed[0], version=parsed[1])
    mine = rows.filter(owner=user).first()
    return mine or rows.order_by("id").first()


def chat_target_get(*, user, model: str) -> chat.ChatTarget:
    """What answers chats for ``model``: one of the user's registry versions (staff: anyone's), else a base (or an
    OpenAI name mapped to one). OpenAIModelNotFound for others' versions and unknown names alike."""
    found = fine_tuned_model_get(user=user, name=model)
    try:
        if found is not None:
            return chat.chat_target_for_model(model=found, name=model)
        if model in base_model_names():
            return chat.chat_target_for_base(base=base_for(model), name=model)
    except chat.ChatUnavailable as exc:
        raise OpenAIModelUnavailable(str(exc)) from None
    raise OpenAIModelNotFound(f"The model {model[:120]!r} does not exist or you do not have access to it.")
