"""Evaluation writes: start, execute (claim, run the engine, finish), cancel, update, recovery.

The one write path for evaluations: the API, the pages, the admin and the Celery tasks
all come here. Status moves by conditional UPDATE; the engine's predictions are saved
as they complete (unique per example and candidate), so a worker lost mid-run is
replaced by one that resumes after the stored predictions instead of asking Ollama again.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import PurePosixPath

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from finetune_studio.events import publish_event_on_commit, user_channel
from finetune_studio.keys import InvalidName, clean_relative_path
from finetune_studio.objects import ObjectNotFound, StorageError, bucket

from . import engine, metrics
from .models import Evaluation, Prediction
from .ollama import OllamaClient, OllamaError
from .signals import evaluation_finished, send_on_commit

logger = logging.getLogger(__name__)

DATASETS_PREFIX = "datasets/"
MAX_FINE_TUNED_CANDIDATES = 10
PROGRESS_EVENT_INTERVAL = 0.5
_OLLAMA_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}$")


class EvaluationInputInvalid(Exception):
    """A request that cannot start an evaluation: ``errors`` maps each field to its reason."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{field}: {reason}" for field, reason in errors.items()))
        self.errors = errors


class EvaluationStateConflict(Exception):
    pass


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
    backslashes, another user's objects) raises EvaluationInputInvalid with the reason.
    """
    from jobs.models import Dataset

    if not isinstance(path, str) or not path:
        raise EvaluationInputInvalid({"test_set_path": "is required"})
    try:
        clean_relative_path(path, what="test_set_path")
    except InvalidName as exc:
        raise EvaluationInputInvalid({"test_set_path": str(exc)}) from None
    own_prefix = f"{DATASETS_PREFIX}users/{int(user.id)}/"
    dataset = Dataset.objects.filter(owner=user, path=path).first()
    if dataset is None and not path.startswith(own_prefix):
        raise EvaluationInputInvalid(
            {"test_set_path": f"must be the path of one of your datasets (under {own_prefix})"}
        )
    if path == own_prefix.rstrip("/") or path.endswith("/"):
        raise EvaluationInputInvalid({"test_set_path": "must name a file, not a folder"})
    return TestSet(path=path, key=path.removeprefix(DATASETS_PREFIX), dataset=dataset)


def _check_model_name(value, field: str, errors: dict) -> str | None:
    if not isinstance(value, str) or not value.strip():
        errors[field] = "is required"
        return None
    value = value.strip()
    if not _OLLAMA_MODEL_NAME.match(value) or ".." in value:
        errors[field] = f"{value[:60]!r} is not a valid Ollama model name"
        return None
    return value


def default_fine_tuned_name(model) -> str:
    """The model's deployed Ollama name when the registry knows one, else its name."""
    return (getattr(model, "ollama_name", "") or model.name or "").strip()


def evaluation_start(
    *,
    user,
    model,
    test_set_path: str,
    base_model_name: str,
    fine_tuned_name: str | None = None,
    fine_tuned_names: list[str] | None = None,
    labels: list[str] | None = None,
    prompt_template: str | None = None,
    max_examples: int | None = None,
    concurrency: int | None = None,
    timeout: int | None = None,
    name: str = "",
) -> Evaluation:
    """Validate, create a pending evaluation and queue its run after commit.

    ``model`` must already be visible to ``user`` (the caller's selector gives 404 otherwise).
    """
    errors: dict[str, str] = {}
    test_set = None
    try:
        test_set = test_set_resolve(user=user, path=test_set_path)
    except EvaluationInputInvalid as exc:
        errors.update(exc.errors)
    base = _check_model_name(base_model_name, "base_model_name", errors)
    names = list(fine_tuned_names or [])
    if fine_tuned_name and (not names or names[0] != fine_tuned_name):
        names.insert(0, fine_tuned_name)
    if not names:
        names = [default_fine_tuned_name(model)]
    checked = [_check_model_name(candidate, "fine_tuned_names", errors) for candidate in names]
    if len(names) > MAX_FINE_TUNED_CANDIDATES:
        errors["fine_tuned_names"] = f"at most {MAX_FINE_TUNED_CANDIDATES} fine-tuned models per evaluation"
    elif "fine_tuned_names" not in errors:
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
        elif clean_labels and "labels" not in errors and dataset.labels:
            unknown = sorted(set(dataset.labels) - set(clean_labels))
            if unknown:
                errors["labels"] = f"the test set has labels that are not listed: {', '.join(unknown[:10])}"
        elif not clean_labels and dataset.labels and len(dataset.labels) < 2:
            errors["test_set_path"] = "the test set has fewer than two distinct labels"
    if errors:
        raise EvaluationInputInvalid(errors)
    if test_set.dataset is None:
        # A raw object path (not a registered dataset): it must at least exist.
        try:
            found = bucket("datasets").exists(test_set.key)
        except StorageError as exc:
            raise EvaluationInputInvalid({"test_set_path": f"storage is unavailable: {exc}"}) from None
        if not found:
            raise EvaluationInputInvalid({"test_set_path": "no such object in your datasets"})
    config = engine.EvaluationConfig(
        labels=clean_labels or [],
        prompt_template=prompt_template or engine.DEFAULT_PROMPT_TEMPLATE,
        max_examples=max_examples,
        concurrency=concurrency or settings.EVALUATION_DEFAULT_CONCURRENCY,
        timeout=float(timeout or settings.OLLAMA_TIMEOUT),
        max_retries=settings.EVALUATION_MAX_RETRIES,
        retry_backoff=settings.EVALUATION_RETRY_BACKOFF_MS / 1000,
    ).to_dict()
    config["fine_tuned_names"] = checked
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


class EvaluationQueueUnavailable(Exception):
    """The broker refused the run: the evaluation was failed with the reason, never left pending unseen."""


def _enqueue_on_commit(evaluation_id: int) -> None:
    transaction.on_commit(lambda: _enqueue(evaluation_id))


def _enqueue(evaluation_id: int) -> None:
    from .tasks import evaluation_run

    try:
        evaluation_run.delay(evaluation_id)
    except Exception as exc:
        if getattr(settings, "CELERY_TASK_ALWAYS_EAGER", False):  # unset in production settings
            raise
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


def _publish(evaluation: Evaluation, **extra) -> None:
    publish_event_on_commit(
        user_channel(evaluation.owner_id),
        "evaluation",
        {
            "id": evaluation.id,
            "model_id": evaluation.model_id,
            "status": evaluation.status,
            "progress": evaluation.progress,
            "error_message": evaluation.error_message,
            "url": f"/evaluations/{evaluation.id}/",
            **extra,
        },
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
            raise EvaluationStateConflict(f"the evaluation is already {evaluation.status}")
        _publish(evaluation)
    return evaluation


def evaluation_retry(*, evaluation: Evaluation) -> Evaluation:
    """Failed → pending, queued again after commit; the predictions already stored are kept and not asked again.

    For a run that failed on something outside it (Ollama dropping connections, a model being
    loaded): the engine skips every (example, candidate) the store holds, so a retry costs only
    what is missing. Attempts start over; the old error stays until the new run ends.
    """
    with transaction.atomic():
        updated = Evaluation.objects.filter(id=evaluation.id, status=Evaluation.Status.FAILED).update(
            status=Evaluation.Status.PENDING, attempts=0, completed_at=None, updated_at=timezone.now()
        )
        evaluation.refresh_from_db()
        if not updated:
            raise EvaluationStateConflict(f"only a failed evaluation can be retried; this one is {evaluation.status}")
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
        expected=p.expected[:500],
        prediction_text=p.prediction_text,
        parsed_label=p.parsed_label,
        correct=p.correct,
        latency_ms=p.latency_ms,
        eval_count=p.eval_count,
        eval_duration_ns=p.eval_duration_ns,
        error=p.error,
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
    )


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
    if evaluation.attempts > settings.EVALUATION_MAX_ATTEMPTS:
        return _finish_failed(
            evaluation,
            f"gave up after {evaluation.attempts - 1} attempts: the workers running it stopped responding",
        )
    _publish(evaluation)
    config = engine.EvaluationConfig.from_dict(evaluation.config)
    client = OllamaClient(
        settings.OLLAMA_URL,
        timeout=config.timeout,
        max_retries=config.max_retries,
        retry_backoff=config.retry_backoff,
        pool_size=max(config.concurrency, 1),
    )
    store = _DatabaseStore(evaluation)
    try:
        records, labels = _load_test_set(evaluation, config)
        engine.run_evaluation(
            records=records,
            candidates=evaluation.candidates,
            labels=labels,
            config=config,
            client=client,
            store=store,
        )
        predictions = [
            as_engine_prediction(row) for row in Prediction.objects.filter(evaluation_id=evaluation.id).iterator()
        ]
        results, examples = metrics.compute_results(predictions, labels=labels, candidates=evaluation.candidates)
    except engine.EvaluationCancelled:
        evaluation.refresh_from_db()
        return evaluation
    except (OllamaError, engine.EvaluationInputError) as exc:
        return _finish_failed(evaluation, str(exc))
    except DatabaseError:
        raise
    except Exception as exc:
        logger.exception("Evaluation %s failed unexpectedly", evaluation_id)
        return _finish_failed(evaluation, f"internal error ({exc.__class__.__name__}): {exc}")
    finally:
        client.close()
    return _finish_completed(evaluation, results, examples)


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
    from models_app.models import RegisteredModel

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
        if updated and evaluation.model_id:
            summary = {**metrics.summary_of(results), "evaluation_id": evaluation.id, "completed_at": now.isoformat()}
            RegisteredModel.objects.filter(id=evaluation.model_id).update(eval_results=summary, updated_at=now)
            publish_event_on_commit(
                user_channel(evaluation.model.owner_id),
                "model",
                {"id": evaluation.model_id, "eval_results": summary},
            )
        if updated:
            _publish(evaluation, verdict=results["significance"]["verdict"], summary=results["significance"]["summary"])
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
    from .tasks import evaluation_run

    Evaluation.objects.filter(status=Evaluation.Status.RUNNING).update(heartbeat_at=None)
    ids = list(Evaluation.objects.filter(status__in=Evaluation.UNFINISHED).values_list("id", flat=True))
    for evaluation_id in ids:
        evaluation_run.delay(evaluation_id)
    return len(ids)


def evaluation_sweep_stale() -> dict:
    """Beat: re-queue running evaluations whose heartbeat expired (a lost worker) and pending ones
    nobody picked up; fail those that used up their attempts."""
    from .tasks import evaluation_run

    now = timezone.now()
    stale = now - timedelta(seconds=settings.EVALUATION_LEASE_SECONDS)
    lost = Evaluation.objects.filter(status=Evaluation.Status.RUNNING, heartbeat_at__lt=stale)
    failed = 0
    for evaluation in lost.filter(attempts__gte=settings.EVALUATION_MAX_ATTEMPTS):
        before = evaluation.status
        _finish_failed(
            evaluation, f"gave up after {evaluation.attempts} attempts: the workers running it stopped responding"
        )
        failed += int(before != Evaluation.Status.FAILED)
    requeue = list(lost.filter(attempts__lt=settings.EVALUATION_MAX_ATTEMPTS).values_list("id", flat=True))
    requeue += list(
        Evaluation.objects.filter(status=Evaluation.Status.PENDING, created_at__lt=stale).values_list("id", flat=True)
    )
    for evaluation_id in requeue:
        transaction.on_commit(lambda evaluation_id=evaluation_id: evaluation_run.delay(evaluation_id))
    return {"requeued": len(requeue), "failed": failed}
