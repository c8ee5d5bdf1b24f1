"""Evaluation writes: start, execute (claim, run the engine, finish), cancel, update, recovery.

The one write path for evaluations: the API, the pages, the admin and the Celery tasks
all come here. Status moves by conditional UPDATE; the engine's predictions are saved
as they complete (unique per example and candidate), so a worker lost mid-run is
replaced by one that resumes after the stored predictions instead of asking its endpoints again.
Candidates are asked through ``inference`` backends, on endpoints the operator configured, by name.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from finetune_studio.errors import DomainConflict, DomainInvalid, DomainUnavailable
from finetune_studio.events import event_payload, publish_event_on_commit, user_channel
from finetune_studio.keys import InvalidName, clean_relative_path
from finetune_studio.objects import ObjectNotFound, StorageError, bucket
from finetune_studio.queueing import BROKER_ERRORS
from inference.base import InferenceError

from . import engine, generation, metrics
from .local_models import AdapterUnavailable
from .models import Evaluation, Prediction
from .signals import evaluation_finished, send_on_commit

logger = logging.getLogger(__name__)

DATASETS_PREFIX = "datasets/"
MAX_FINE_TUNED_CANDIDATES = 10
PROGRESS_EVENT_INTERVAL = 0.5
# Ollama tags and OpenAI-compatible model ids (org/name, name:tag, name@digest).
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}$")


class EvaluationsInvalid(DomainInvalid):
    """A request that cannot start an evaluation: ``errors`` maps each field to its reason."""

    def __init__(self, errors: dict[str, str]):
        super().__init__(errors=errors)


class EvaluationsConflict(DomainConflict):
    """The evaluation's state does not allow this (cancel a finished one, retry one that did not fail)."""


@dataclass(frozen=True)
class TestSet:
    path: str
    key: str  # in the datasets bucket
    dataset: object | None  # jobs.Dataset when the path is one of the user's datasets


# --- starting ---------------------------------------------------------------------------------------
def test_set_resolve(*, user, path) -> TestSet:
    """Check a user-given ``test_set_path`` without touching storage.

    Accepted: the ``path`` of one of the user's datasets, or a clean path under
    ``datasets/users/<their id>/``. Anything else (traversal, absolute, encoded,
    backslashes, another user's objects) raises EvaluationsInvalid with the reason.
    """
    from jobs.models import Dataset

    if not isinstance(path, str) or not path:
        raise EvaluationsInvalid({"test_set_path": "is required"})
    try:
        clean_relative_path(path, what="test_set_path")
    except InvalidName as exc:
        raise EvaluationsInvalid({"test_set_path": str(exc)}) from None
    own_prefix = f"{DATASETS_PREFIX}users/{int(user.id)}/"
    dataset = Dataset.objects.filter(owner=user, path=path).first()
    if dataset is None and not path.startswith(own_prefix):
        raise EvaluationsInvalid({"test_set_path": f"must be the path of one of your datasets (under {own_prefix})"})
    if path == own_prefix.rstrip("/") or path.endswith("/"):
        raise EvaluationsInvalid({"test_set_path": "must name a file, not a folder"})
    return TestSet(path=path, key=path.removeprefix(DATASETS_PREFIX), dataset=dataset)


def _check_model_name(value, field: str, errors: dict) -> str | None:
    if not isinstance(value, str) or not value.strip():
        errors[field] = "is required"
        return None
    value = value.strip()
    if not _MODEL_NAME.match(value) or ".." in value:
        errors[field] = f"{value[:60]!r} is not a valid model name"
        return None
    return value


def default_fine_tuned_name(model) -> str:
    """The model's deployed Ollama name when the registry knows one, else its name."""
    return (getattr(model, "ollama_name", "") or model.name or "").strip()


def _looks_like_url(value) -> bool:
    return isinstance(value, str) and ("://" in value or value.startswith(("/", "\\")) or ":" in value)


def _check_endpoint(value, field: str, errors: dict):
    """The endpoint a candidate is asked on (the operator's, by name), or None with the reason in ``errors``."""
    from inference.base import Refused
    from inference.selectors import endpoint_default_name, endpoint_usable

    name = value if value not in (None, "") else endpoint_default_name()
    if _looks_like_url(name):
        errors[field] = (
            f"{str(name)[:80]!r} is not an endpoint name: evaluations use the studio's inference endpoints by "
            "name (GET /api/v1/inference/endpoints), never a URL"
        )
        return None
    try:
        return endpoint_usable(name=name)
    except Refused as exc:
        errors[field] = str(exc)
        return None


def _local_base(name: str, field: str, errors: dict) -> str | None:
    """A base-model catalogue name the local engine can load, or None with the reason."""
    from finetune_studio.base_models import BaseModelRefused, base_model_resolve

    try:
        return base_model_resolve(name, loadable=True).name
    except BaseModelRefused as exc:
        errors[field] = f"on the local endpoint, {exc}"
        return None


def _registry_adapter_candidate(model, base_name: str | None, errors: dict) -> str | None:
    """The name the model's own adapter (on its base) is recorded under, or None with the reason."""
    from finetune_studio.base_models import BaseModelRefused, base_model_resolve

    from .local_models import has_adapter

    if not has_adapter(model):
        errors["fine_tuned_names"] = (
            "this model has no LoRA adapter in the registry (lora_adapters/adapter_config.json and weights), so "
            "the local endpoint has nothing to load; name a fine_tuned_name or use another endpoint"
        )
        return None
    try:
        base_model_resolve(model.base_model, loadable=True)
    except BaseModelRefused as exc:
        errors["fine_tuned_names"] = f"the local endpoint cannot load this model's base: {exc}"
        return None
    name = (model.name or f"model-{model.id}").strip()[:180]
    return name if name != base_name else f"{name} (fine-tuned)"


def evaluation_prompt_for(model) -> dict:
    """How a model is asked: as it was taught when the lineage records a lora-sft run, else the template."""
    run = (model.training_metrics or {}).get("run") if model is not None else None
    if isinstance(run, dict) and run.get("trainer") in ("lora-sft", "lora-dpo"):
        return {
            "prompt_style": engine.PROMPT_AS_TRAINED,
            "system_prompt": run.get("system_prompt") or "",
            "chat_template_sha256": run.get("chat_template_sha256") or "",
        }
    return {"prompt_style": engine.PROMPT_TEMPLATE, "system_prompt": "", "chat_template_sha256": ""}


def evaluation_start(
    *,
    user,
    model,
    test_set_path: str,
    base_model_name: str | None = None,
    fine_tuned_name: str | None = None,
    fine_tuned_names: list[str] | None = None,
    endpoint: str | None = None,
    base_endpoint: str | None = None,
    fine_tuned_endpoint: str | None = None,
    labels: list[str] | None = None,
    prompt_template: str | None = None,
    max_examples: int | None = None,
    concurrency: int | None = None,
    timeout: int | None = None,
    name: str = "",
    task: str | None = None,
    judge: dict | None = None,
    json_schema: dict | None = None,
    parity: dict | None = None,
) -> Evaluation:
    """Validate, create a pending evaluation and queue its run after commit.

    ``model`` must already be visible to ``user`` (the caller's selector gives 404 otherwise). Each candidate
    is asked on an endpoint the operator configured, by name: ``base_endpoint`` and ``fine_tuned_endpoint``
    (``endpoint`` sets both; absent means INFERENCE_DEFAULT_ENDPOINT). On a ``local`` endpoint the names are
    base-model catalogue names, ``base_model_name`` defaults to the model's base and a missing
    ``fine_tuned_name`` means this model's own LoRA adapter on that base. A model trained by lora-sft is
    asked as it was taught (its system prompt, the record's text) unless a prompt template is given.

    ``task``: ``classification`` or ``generation`` (default: the test set's task when it is one of the user's
    datasets, else classification). A generation evaluation may name a ``judge`` ({endpoint, model,
    prompt}) and a ``json_schema`` the answers must match (``evaluations.generation``).

    ``parity`` (from ``evaluations.parity.parity_check_start`` only): the first candidate is this model's own
    adapter on the local endpoint instead of a base, and the dict (the live digest, the bound) is stored in
    the config, where the run reads it to add the parity report and record the verdict.
    """
    errors: dict[str, str] = {}
    test_set = None
    try:
        test_set = test_set_resolve(user=user, path=test_set_path)
    except EvaluationsInvalid as exc:
        errors.update(exc.errors)
    task, generation_config = _check_generation(task, judge, json_schema, test_set, errors)
    base_at = _check_endpoint(base_endpoint or endpoint, "base_endpoint" if base_endpoint else "endpoint", errors)
    tuned_field = "fine_tuned_endpoint" if fine_tuned_endpoint else "endpoint"
    tuned_at = _check_endpoint(fine_tuned_endpoint or endpoint, tuned_field, errors)
    base = None
    if base_at is not None:
        given = base_model_name if base_model_name is not None else (model.base_model or "")
        if base_at.kind == "local":
            base = _local_base(given, "base_model_name", errors)
        else:
            if base_model_name is None and base_at.kind == "ollama":
                given = model.ollama_base or given
            base = _check_model_name(given, "base_model_name", errors)
    base_source = "named"
    if parity is not None and base_at is not None and base_at.kind == "local" and "base_model_name" not in errors:
        base_source = "registry_adapter"
        adapter = _registry_adapter_candidate(model, None, errors)
        base = f"{adapter} (local adapter)" if adapter else None
    names = list(fine_tuned_names or [])
    if fine_tuned_name and (not names or names[0] != fine_tuned_name):
        names.insert(0, fine_tuned_name)
    sources = ["named"] * len(names)
    checked: list[str | None] = []
    if tuned_at is not None:
        if not names:
            if tuned_at.kind == "local":
                names, sources = [_registry_adapter_candidate(model, base, errors)], ["registry_adapter"]
                checked = list(names)
            else:
                names, sources = [default_fine_tuned_name(model)], ["named"]
        if not checked:
            if tuned_at.kind == "local":
                checked = [_local_base(candidate, "fine_tuned_names", errors) for candidate in names]
            else:
                checked = [_check_model_name(candidate, "fine_tuned_names", errors) for candidate in names]
    if "fine_tuned_names" not in errors and base is not None and tuned_at is not None and tuned_at.kind != "local":
        # One model named twice (the seed's field repeated in the list, or "x" and "x:latest") is asked once.
        try:
            deduplicated = engine.distinct_fine_tuned(base, checked)
        except engine.EvaluationInputError as exc:
            errors["fine_tuned_names"] = str(exc)
        else:
            kept = {id(name) for name in deduplicated}
            sources = [source for name, source in zip(checked, sources, strict=True) if id(name) in kept]
            names = checked = deduplicated
    if len(checked or names) > MAX_FINE_TUNED_CANDIDATES:
        errors["fine_tuned_names"] = f"at most {MAX_FINE_TUNED_CANDIDATES} fine-tuned models per evaluation"
    elif "fine_tuned_names" not in errors and base is not None:
        candidates = [base, *checked]
        if len(set(candidates)) != len(candidates):
            errors["fine_tuned_names"] = "every candidate (base and fine-tuned models) must be a different model"
    clean_labels = None
    if labels:
        clean_labels = [label.strip() for label in labels if isinstance(label, str)]
        if any(not label for label in clean_labels) or len(clean_labels) != len(labels):
            errors["labels"] = "labels must be non-empty strings"
        elif len(set(clean_labels)) != len(clean_labels):
            errors["labels"] = "labels contain duplicates"
        elif len(clean_labels) < 2:
            errors["labels"] = "give at least two labels"
    if prompt_template is not None and prompt_template != "" and "{text}" not in prompt_template:
        errors["prompt_template"] = "must contain {text} where the example goes"
    if test_set is not None and test_set.dataset is not None and "test_set_path" not in errors:
        dataset = test_set.dataset
        if not dataset.records:
            errors["test_set_path"] = "the test set has no records"
        elif task == generation.GENERATION:
            pass  # references, not labels: prepare_examples checks every record when the run reads them
        elif clean_labels and "labels" not in errors and dataset.labels:
            unknown = sorted(set(dataset.labels) - set(clean_labels))
            if unknown:
                errors["labels"] = f"the test set has labels that are not listed: {', '.join(unknown[:10])}"
        elif not clean_labels and dataset.labels and len(dataset.labels) < 2:
            errors["test_set_path"] = "the test set has fewer than two distinct labels"
    if errors:
        raise EvaluationsInvalid(errors)
    if test_set.dataset is None:
        # A raw object path (not a registered dataset): it must at least exist.
        try:
            found = bucket("datasets").exists(test_set.key)
        except StorageError as exc:
            raise EvaluationsInvalid({"test_set_path": f"storage is unavailable: {exc}"}) from None
        if not found:
            raise EvaluationsInvalid({"test_set_path": "no such object in your datasets"})
    prompt = (
        evaluation_prompt_for(model)
        if not prompt_template
        else {"prompt_style": engine.PROMPT_TEMPLATE, "system_prompt": "", "chat_template_sha256": ""}
    )
    config = engine.EvaluationConfig(
        labels=clean_labels or [],
        prompt_template=prompt_template or engine.DEFAULT_PROMPT_TEMPLATE,
        max_examples=max_examples,
        concurrency=concurrency or settings.EVALUATION_DEFAULT_CONCURRENCY,
        timeout=float(timeout) if timeout else None,
        max_retries=settings.EVALUATION_MAX_RETRIES,
        retry_backoff=settings.EVALUATION_RETRY_BACKOFF_MS / 1000,
        prompt_style=prompt["prompt_style"],
        system_prompt=prompt["system_prompt"],
    ).to_dict()
    config["fine_tuned_names"] = checked
    config["chat_template_sha256"] = prompt["chat_template_sha256"]
    config["task"] = task
    config.update(generation_config)
    if task == generation.GENERATION:
        config["num_predict"] = generation.DEFAULT_MAX_TOKENS  # answers, not a label
    if parity is not None:
        config["parity"] = dict(parity)
    # Where each candidate is asked, recorded as it was decided: the run and the results read this.
    config["candidates"] = [
        {"name": base, "role": "base", "endpoint": base_at.name, "source": base_source},
        *(
            {"name": candidate, "role": "fine_tuned", "endpoint": tuned_at.name, "source": source}
            for candidate, source in zip(checked, sources, strict=True)
        ),
    ]
    with transaction.atomic():
        evaluation = Evaluation.objects.create(
            owner=user,
            model=model,
            job_id=model.job_id,
            test_set_path=test_set.path,
            base_model_name=base,
            fine_tuned_name=checked[0],
            name=(name or "")[:200],
            config=config,
            progress={"done": 0, "total": None},
        )
        _enqueue_on_commit(evaluation.id)
        _publish(evaluation)
    return evaluation


def _check_generation(task, judge, json_schema, test_set, errors: dict) -> tuple[str, dict]:
    """The task (given, or the dataset's) and a generation's own settings, with reasons in ``errors``."""
    from . import judge as judging

    if task in (None, ""):
        dataset_task = test_set.dataset.task if test_set is not None and test_set.dataset else ""
        task = dataset_task if dataset_task in generation.TASKS else generation.CLASSIFICATION
    elif task not in generation.TASKS:
        errors["task"] = f"must be one of {', '.join(generation.TASKS)}"
        return generation.CLASSIFICATION, {}
    config: dict = {}
    if task != generation.GENERATION:
        for field, value in (("judge", judge), ("json_schema", json_schema)):
            if value is not None:
                errors[field] = "only a generation evaluation (task: generation) takes this"
        return task, config
    if json_schema is not None:
        reason = generation.check_json_schema(json_schema)
        if reason:
            errors["json_schema"] = reason
        else:
            config["json_schema"] = json_schema
    if judge is not None:
        if not isinstance(judge, dict):
            errors["judge"] = "must be an object with endpoint and model"
            return task, config
        unknown = sorted(set(judge) - {"endpoint", "model", "prompt"})
        if unknown:
            errors["judge"] = f"unknown keys: {', '.join(map(str, unknown))} (endpoint, model and prompt are known)"
            return task, config
        judge_errors: dict[str, str] = {}
        endpoint = _check_endpoint(judge.get("endpoint"), "endpoint", judge_errors)
        model_name = _check_model_name(judge.get("model"), "model", judge_errors)
        prompt = judge.get("prompt")
        if prompt not in (None, ""):
            reason = judging.check_prompt(prompt)
            if reason:
                judge_errors["prompt"] = reason
        if judge_errors:
            errors["judge"] = "; ".join(f"{field}: {reason}" for field, reason in judge_errors.items())
        else:
            config["judge"] = {
                "endpoint": endpoint.name,
                "model": model_name,
                "prompt": prompt or judging.DEFAULT_JUDGE_PROMPT,
            }
    return task, config


class EvaluationQueueUnavailable(DomainUnavailable):
    """The broker refused the run: the evaluation was failed with the reason, never left pending unseen."""


def _enqueue_on_commit(evaluation_id: int) -> None:
    transaction.on_commit(lambda: _enqueue(evaluation_id))


def _send_run(evaluation_id: int) -> None:
    """The app's one way to queue a run; only the broker's refusal is an error here (BROKER_ERRORS)."""
    from .tasks import evaluation_run

    evaluation_run.delay(evaluation_id)


def _resend_run(evaluation_id: int) -> bool:
    """Send a run again (sweeper, restart): a refusing broker leaves the evaluation for the next sweep."""
    try:
        _send_run(evaluation_id)
    except BROKER_ERRORS as exc:
        logger.warning("Could not send evaluation %s again (%s); the next sweep retries", evaluation_id, exc)
        return False
    return True


def _enqueue(evaluation_id: int) -> None:
    try:
        _send_run(evaluation_id)
    except BROKER_ERRORS as exc:
        # Redis down or frozen: the broker's socket timeouts bound this; say so rather than hang or 500.
        logger.exception("Could not enqueue evaluation %s", evaluation_id)
        now = timezone.now()
        Evaluation.objects.filter(id=evaluation_id, status=Evaluation.Status.PENDING).update(
            status=Evaluation.Status.FAILED,
            error_message=f"could not be queued: {exc}"[:5000],
            completed_at=now,
            updated_at=now,
        )
        raise EvaluationQueueUnavailable(
            f"The task queue is unavailable, so evaluation #{evaluation_id} was not started; try again shortly."
        ) from None


def _publish(evaluation: Evaluation) -> None:
    """The one ``evaluation`` event: always the same keys (``verdict`` and ``summary`` are None until completed)."""
    significance = (evaluation.results or {}).get("significance") or {}
    completed = evaluation.status == Evaluation.Status.COMPLETED
    publish_event_on_commit(
        user_channel(evaluation.owner_id),
        "evaluation",
        event_payload(
            id=evaluation.id,
            action=evaluation.status,
            model_id=evaluation.model_id,
            url=f"/evaluations/{evaluation.id}/",
            status=evaluation.status,
            progress=evaluation.progress,
            error_message=evaluation.error_message,
            verdict=significance.get("verdict") if completed else None,
            summary=significance.get("summary") if completed else None,
        ),
    )


# --- editing and cancelling -------------------------------------------------------------------------
def evaluation_update(*, evaluation: Evaluation, name: str | None = None, note: str | None = None) -> Evaluation:
    """Only the name and the note are editable; results never are."""
    changes = {}
    if name is not None:
        changes["name"] = name[:200]
    if note is not None:
        changes["note"] = note
    if changes:
        changes["updated_at"] = timezone.now()
        Evaluation.objects.filter(id=evaluation.id).update(**changes)
        for field, value in changes.items():
            setattr(evaluation, field, value)
    return evaluation


def evaluation_cancel(*, evaluation: Evaluation) -> Evaluation:
    """Pending or running → cancelled. A running engine notices at its next save (≤ 0.5 s) and stops."""
    now = timezone.now()
    with transaction.atomic():
        updated = Evaluation.objects.filter(id=evaluation.id, status__in=Evaluation.UNFINISHED).update(
            status=Evaluation.Status.CANCELLED, completed_at=now, updated_at=now
        )
        evaluation.refresh_from_db()
        if not updated:
            raise EvaluationsConflict(f"the evaluation is already {evaluation.status}")
        _publish(evaluation)
    return evaluation


def evaluation_retry(*, evaluation: Evaluation) -> Evaluation:
    """Failed → pending, queued again after commit; the predictions already stored are kept and not asked again.

    For a run that failed on something outside it (Ollama dropping connections, a model being
    loaded): the engine skips every (example, candidate) the store holds, so a retry costs only
    what is missing. ``attempts`` keeps counting runs; the budget for lost workers
    (``attempts_since_retry``) starts over. The old error stays until the new run ends.
    """
    with transaction.atomic():
        updated = Evaluation.objects.filter(id=evaluation.id, status=Evaluation.Status.FAILED).update(
            status=Evaluation.Status.PENDING, attempts_since_retry=0, completed_at=None, updated_at=timezone.now()
        )
        evaluation.refresh_from_db()
        if not updated:
            raise EvaluationsConflict(f"only a failed evaluation can be retried; this one is {evaluation.status}")
        _enqueue_on_commit(evaluation.id)
        _publish(evaluation)
    return evaluation


# --- running ----------------------------------------------------------------------------------------
class _DatabaseStore:
    """The engine's store: predictions in bulk, progress + heartbeat, cancellation by status."""

    def __init__(self, evaluation: Evaluation):
        self.evaluation = evaluation
        self.stopped = False
        self._last_event = 0.0

    def stored_keys(self) -> set[tuple[int, str]]:
        return set(Prediction.objects.filter(evaluation_id=self.evaluation.id).values_list("index", "candidate"))

    def save(self, predictions: list, *, done: int, total: int) -> None:
        now = timezone.now()
        with transaction.atomic():
            if predictions:
                Prediction.objects.bulk_create(
                    [_prediction_row(self.evaluation.id, p) for p in predictions], ignore_conflicts=True
                )
            progress = {"done": done, "total": total}
            # The status condition is the cancellation check: a cancelled evaluation updates nothing.
            updated = Evaluation.objects.filter(id=self.evaluation.id, status=Evaluation.Status.RUNNING).update(
                progress=progress, heartbeat_at=now, updated_at=now
            )
        self.stopped = updated == 0
        self.evaluation.progress = progress
        if predictions and not self.stopped and time.monotonic() - self._last_event >= PROGRESS_EVENT_INTERVAL:
            self._last_event = time.monotonic()
            _publish(self.evaluation)

    def should_stop(self) -> bool:
        return self.stopped


def _prediction_row(evaluation_id: int, p: engine.Prediction) -> Prediction:
    return Prediction(
        evaluation_id=evaluation_id,
        index=p.index,
        candidate=p.candidate,
        input_text=p.input_text,
        expected=p.expected,
        prediction_text=p.prediction_text,
        parsed_label=p.parsed_label,
        correct=p.correct,
        latency_ms=p.latency_ms,
        eval_count=p.eval_count,
        eval_duration_ns=p.eval_duration_ns,
        error=p.error,
        scores=p.scores or {},
    )


def as_engine_prediction(row: Prediction) -> engine.Prediction:
    return engine.Prediction(
        index=row.index,
        candidate=row.candidate,
        expected=row.expected,
        input_text=row.input_text,
        prediction_text=row.prediction_text,
        parsed_label=row.parsed_label,
        correct=row.correct,
        latency_ms=row.latency_ms,
        eval_count=row.eval_count,
        eval_duration_ns=row.eval_duration_ns,
        error=row.error,
        scores=row.scores or {},
    )


def _stored_predictions(evaluation: Evaluation) -> list[engine.Prediction]:
    return [
        as_engine_prediction(row)
        for row in Prediction.objects.filter(evaluation_id=evaluation.id).iterator(chunk_size=2000)
    ]


def evaluation_claim(*, evaluation_id: int) -> bool:
    """Pending, or running with an expired heartbeat (its worker was lost) → running, held by us."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.EVALUATION_LEASE_SECONDS)
    claimable = Q(status=Evaluation.Status.PENDING) | Q(
        Q(heartbeat_at__lt=stale) | Q(heartbeat_at__isnull=True), status=Evaluation.Status.RUNNING
    )
    return bool(
        Evaluation.objects.filter(claimable, id=evaluation_id).update(
            status=Evaluation.Status.RUNNING,
            heartbeat_at=now,
            started_at=Coalesce("started_at", Value(now)),
            attempts=F("attempts") + 1,
            attempts_since_retry=F("attempts_since_retry") + 1,
            updated_at=now,
        )
    )


def evaluation_execute(*, evaluation_id: int) -> Evaluation | None:
    """Run (or resume) one evaluation to its end. Idempotent: a second delivery finds nothing to claim.

    Ends completed, failed (with a message that says what happened) or cancelled. Database
    errors propagate (the task retries; the lease lets another worker resume later).
    """
    if not evaluation_claim(evaluation_id=evaluation_id):
        return None
    evaluation = Evaluation.objects.select_related("model").get(id=evaluation_id)
    if evaluation.attempts_since_retry > settings.EVALUATION_MAX_ATTEMPTS:
        return _finish_failed(
            evaluation,
            f"gave up after {evaluation.attempts_since_retry - 1} attempts: the workers running it stopped responding",
        )
    _publish(evaluation)
    config = engine.EvaluationConfig.from_dict(evaluation.config)
    store = _DatabaseStore(evaluation)
    backends: list = []
    folders: dict[str, str] = {}
    try:
        records, labels = _load_test_set(evaluation, config)
        candidates = _candidates(evaluation, config, backends, folders)
        predictions = None
        if evaluation.config.get("task") == generation.GENERATION:
            results, examples = _run_generation(evaluation, config, records, candidates, store, backends, folders)
        else:
            engine.run_evaluation(records=records, candidates=candidates, labels=labels, config=config, store=store)
            predictions = _stored_predictions(evaluation)
            results, examples = metrics.compute_results(predictions, labels=labels, candidates=evaluation.candidates)
        if evaluation.config.get("parity"):
            from . import parity

            results["parity"] = parity.parity_report(
                predictions if predictions is not None else _stored_predictions(evaluation),
                candidates=evaluation.candidates,
                results=results,
                plan=evaluation.config["parity"],
            )
    except engine.EvaluationCancelled:
        evaluation.refresh_from_db()
        return evaluation
    except (InferenceError, engine.EvaluationInputError, AdapterUnavailable) as exc:
        return _finish_failed(evaluation, _without_folders(str(exc), folders))
    except DatabaseError:
        raise
    except Exception as exc:
        logger.exception("Evaluation %s failed unexpectedly", evaluation_id)
        return _finish_failed(evaluation, f"internal error ({exc.__class__.__name__}): {exc}")
    finally:
        for backend in backends:
            backend.close()
    return _finish_completed(evaluation, results, examples)


def _without_folders(message: str, folders: dict[str, str]) -> str:
    """The worker's folders never reach the user: the local engine's messages name them, the user sees names."""
    for folder in sorted(folders, key=len, reverse=True):
        message = message.replace(folder, folders[folder])
    return message


def _candidates(
    evaluation: Evaluation, config: engine.EvaluationConfig, backends: list, folders: dict[str, str]
) -> list[engine.Candidate]:
    """Each candidate with the backend of its endpoint (one backend per endpoint), built on this worker.

    The endpoint is looked up again: one disabled since the evaluation was queued refuses here, with the
    reason. On a local endpoint the folders are resolved now (the base from the catalogue, the model's
    adapter downloaded into this worker's cache) and registered under the candidate's name, so no path
    ever travels in a request.
    """
    from inference.base import RetryPolicy
    from inference.local import LocalModelRef
    from inference.selectors import endpoint_usable, local_engine

    from .local_models import adapter_folder, chat_template_sha256, has_adapter

    by_endpoint: dict[str, object] = {}
    retry = RetryPolicy(max_retries=config.max_retries, backoff=config.retry_backoff)
    adapter: Path | None = None
    as_trained = config.prompt_style == engine.PROMPT_AS_TRAINED
    candidates = []
    for plan in evaluation.candidate_plans:
        backend = by_endpoint.get(plan["endpoint"])
        if backend is None:
            endpoint = endpoint_usable(name=plan["endpoint"])
            concurrency = max(1, config.concurrency)
            if endpoint.source != "built-in":  # the operator's bound for a server they configured
                concurrency = min(concurrency, endpoint.concurrency)
            endpoint = replace(endpoint, concurrency=concurrency, timeout=config.timeout or endpoint.timeout)
            backend = endpoint.build_backend(
                local_engine=local_engine() if endpoint.kind == "local" else None, retry=retry
            )
            by_endpoint[plan["endpoint"]] = backend
            backends.append(backend)
        if backend.kind == "local":
            from finetune_studio.base_models import BaseModelRefused, base_model_resolve

            model = evaluation.model
            wants_adapter = plan["source"] == "registry_adapter"
            if adapter is None and model is not None and (wants_adapter or (as_trained and has_adapter(model))):
                adapter = adapter_folder(model)
                folders[str(adapter)] = f"the adapter of model #{model.id}"
                trained_with = (evaluation.config or {}).get("chat_template_sha256")
                found = chat_template_sha256(adapter)
                if as_trained and trained_with and found and found != trained_with:
                    # Asking through another template than the one trained would measure the template, not the model.
                    raise engine.EvaluationInputError(
                        f"the adapter of model #{model.id} carries a chat template (sha256 {found[:12]}…) other than "
                        f"the one it was trained with (sha256 {trained_with[:12]}…, in its lineage)"
                    )
            base_name = model.base_model if wants_adapter else plan["name"]
            try:
                base_folder = base_model_resolve(base_name, loadable=True).path
            except BaseModelRefused as exc:
                raise engine.EvaluationInputError(f"the local endpoint cannot load {exc}") from None
            folders[str(base_folder)] = f"base model {base_name}"
            # Both candidates read prompts through the adapter's tokenizer (its chat template) when the model
            # was trained here: the base is asked exactly as the fine-tuned model is.
            tokenizer = str(adapter) if adapter is not None and as_trained else None
            backend.register(
                plan["name"],
                LocalModelRef(
                    base=str(base_folder), adapter=str(adapter) if wants_adapter else None, tokenizer=tokenizer
                ),
            )
        candidates.append(engine.Candidate(name=plan["name"], backend=backend))
    return candidates


def _run_generation(evaluation, config, records, candidates, store, backends: list, folders: dict):
    """A generation evaluation's run: the engine asks, scores travel with the predictions, then the judge."""
    from . import judge as judging

    plan = None
    judge_backend = None
    given = evaluation.config.get("judge")
    if given:
        plan = judging.JudgePlan(endpoint=given["endpoint"], model=given["model"], prompt=given["prompt"])
        judge_backend = _judge_backend(plan, config, backends, folders)

    return generation.run_and_score(
        records=records,
        candidates=candidates,
        config=config,
        store=store,
        load_predictions=lambda: _stored_predictions(evaluation),
        schema=evaluation.config.get("json_schema"),
        judge_plan=plan,
        judge_backend=judge_backend,
        judge_cache=judging.DatabaseJudgeCache(evaluation.owner_id),
    )


def _judge_backend(plan, config: engine.EvaluationConfig, backends: list, folders: dict):
    """The judge's endpoint, looked up again (one disabled since the evaluation was queued refuses)."""
    from inference.base import RetryPolicy
    from inference.local import LocalModelRef
    from inference.selectors import endpoint_usable, local_engine

    endpoint = endpoint_usable(name=plan.endpoint)
    concurrency = max(1, config.concurrency)
    if endpoint.source != "built-in":
        concurrency = min(concurrency, endpoint.concurrency)
    endpoint = replace(endpoint, concurrency=concurrency, timeout=config.timeout or endpoint.timeout)
    backend = endpoint.build_backend(
        local_engine=local_engine() if endpoint.kind == "local" else None,
        retry=RetryPolicy(max_retries=config.max_retries, backoff=config.retry_backoff),
    )
    backends.append(backend)
    if backend.kind == "local":
        from finetune_studio.base_models import BaseModelRefused, base_model_resolve

        try:
            folder = base_model_resolve(plan.model, loadable=True).path
        except BaseModelRefused as exc:
            raise engine.EvaluationInputError(f"the local endpoint cannot load the judge: {exc}") from None
        folders[str(folder)] = f"base model {plan.model}"
        backend.register(plan.model, LocalModelRef(base=str(folder)))
    return backend


def _load_test_set(evaluation: Evaluation, config: engine.EvaluationConfig):
    key = evaluation.test_set_path.removeprefix(DATASETS_PREFIX)
    datasets = bucket("datasets")
    try:
        size = datasets.size(key)
        if size > settings.EVALUATION_MAX_TEST_SET_BYTES:
            raise engine.EvaluationInputError(
                f"the test set is {size} bytes; evaluations read at most {settings.EVALUATION_MAX_TEST_SET_BYTES}"
            )
        data = datasets.read_bytes(key)
    except ObjectNotFound:
        raise engine.EvaluationInputError(f"the test set {evaluation.test_set_path} no longer exists") from None
    except StorageError as exc:
        raise engine.EvaluationInputError(f"the test set could not be read: {exc}") from None
    records = engine.load_records_from_bytes(data, PurePosixPath(key).name)
    if evaluation.config.get("task") == generation.GENERATION:
        return generation.prepare_examples(records, config)
    return engine.prepare_examples(records, config)


def _finish_failed(evaluation: Evaluation, message: str) -> Evaluation:
    now = timezone.now()
    with transaction.atomic():
        Evaluation.objects.filter(id=evaluation.id, status=Evaluation.Status.RUNNING).update(
            status=Evaluation.Status.FAILED, error_message=message[:5000], completed_at=now, updated_at=now
        )
        evaluation.refresh_from_db()
        if evaluation.status == Evaluation.Status.FAILED:
            _publish(evaluation)
            _announce_finished(evaluation)
    return evaluation


def _finish_completed(evaluation: Evaluation, results: dict, examples: list) -> Evaluation:
    from models_app.services import model_eval_results_set

    now = timezone.now()
    with transaction.atomic():
        updated = Evaluation.objects.filter(id=evaluation.id, status=Evaluation.Status.RUNNING).update(
            status=Evaluation.Status.COMPLETED,
            results=results,
            examples=examples,
            completed_at=now,
            updated_at=now,
            error_message="",
        )
        evaluation.refresh_from_db()
        if updated and evaluation.model_id and results.get("parity"):
            # A parity check compares a deployment with its own adapter, not a fine-tune with its base: it is no
            # evidence about the fine-tune, so the model's eval results stay; its verdict goes to the deployment.
            from . import parity

            parity.parity_verdict_record(evaluation=evaluation)
        elif updated and evaluation.model_id:
            summarise = generation.summary_of if results.get("task") == generation.GENERATION else metrics.summary_of
            summary = {**summarise(results), "evaluation_id": evaluation.id, "completed_at": now.isoformat()}
            model_eval_results_set(model_id=evaluation.model_id, results=summary)
        if updated:
            _publish(evaluation)
            _announce_finished(evaluation, verdict=results["significance"]["verdict"])
    return evaluation


def _announce_finished(evaluation: Evaluation, *, verdict: str | None = None) -> None:
    send_on_commit(
        evaluation_finished,
        evaluation_id=evaluation.id,
        owner_id=evaluation.owner_id,
        model_id=evaluation.model_id,
        status=evaluation.status,
        verdict=verdict,
    )


# --- recovery ---------------------------------------------------------------------------------------
def evaluation_redispatch_unfinished() -> int:
    """At the start of a standalone process: its in-memory queue is empty, so every unfinished
    evaluation is orphaned. Running ones are released (their worker died with the process)."""
    Evaluation.objects.filter(status=Evaluation.Status.RUNNING).update(heartbeat_at=None)
    ids = list(Evaluation.objects.filter(status__in=Evaluation.UNFINISHED).values_list("id", flat=True))
    return sum(_resend_run(evaluation_id) for evaluation_id in ids)


def _pending_unclaimed_take(*, now) -> list[int]:
    """Pending evaluations nobody claimed for ``QUEUED_REDISPATCH_SECONDS``: their message may be lost.

    ``updated_at`` moves with every state change (creation, retry), so an old one was not picked up since.
    Each is taken by a conditional UPDATE of ``updated_at``: one sweeper wins, and the next resend comes a
    period later at the earliest (a message too many finds nothing to claim).
    """
    bound = now - timedelta(seconds=settings.QUEUED_REDISPATCH_SECONDS)
    taken = []
    old = Evaluation.objects.filter(status=Evaluation.Status.PENDING, updated_at__lt=bound)
    for evaluation_id, seen in old.values_list("id", "updated_at"):
        if Evaluation.objects.filter(id=evaluation_id, status=Evaluation.Status.PENDING, updated_at=seen).update(
            updated_at=now
        ):
            taken.append(evaluation_id)
    return taken


def evaluation_sweep_stale() -> dict:
    """Beat: re-queue running evaluations whose heartbeat expired (a lost worker) and pending ones
    nobody picked up; fail those that used up their attempts."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.EVALUATION_LEASE_SECONDS)
    lost = Evaluation.objects.filter(status=Evaluation.Status.RUNNING, heartbeat_at__lt=stale)
    failed = 0
    for evaluation in lost.filter(attempts_since_retry__gte=settings.EVALUATION_MAX_ATTEMPTS):
        before = evaluation.status
        _finish_failed(
            evaluation,
            f"gave up after {evaluation.attempts_since_retry} attempts: the workers running it stopped responding",
        )
        failed += int(before != Evaluation.Status.FAILED)
    requeue = list(lost.filter(attempts_since_retry__lt=settings.EVALUATION_MAX_ATTEMPTS).values_list("id", flat=True))
    requeue += _pending_unclaimed_take(now=now)
    for evaluation_id in requeue:
        transaction.on_commit(lambda evaluation_id=evaluation_id: _resend_run(evaluation_id))
    return {"requeued": len(requeue), "failed": failed}
