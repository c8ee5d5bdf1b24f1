"""Sweep writes: create (plan the trials), advance (the reconciler), cancel, promote the best.

``sweep_advance`` is idempotent and derives everything from the trials' jobs and evaluations:
it runs on every job/model/evaluation signal of a trial and from beat, under the sweep's row
lock, so two runs at once never start one trial twice or exceed the concurrency limit.
"""

import contextlib
import logging

from django.db import transaction
from django.utils import timezone

from evaluations.models import Evaluation
from evaluations.services import (
    EvaluationsConflict,
    EvaluationsInvalid,
    default_fine_tuned_name,
    evaluation_cancel,
    evaluation_start,
    test_set_resolve,
)
from finetune_studio.errors import DomainConflict
from finetune_studio.events import publish_event_on_commit, user_channel
from finetune_studio.records import CLASSIFICATION, task_of_metric
from finetune_studio.registry_names import InvalidRegisteredName, check_registered_name
from jobs import services as job_services
from jobs.models import Dataset, Job, Trainer
from jobs.selectors import dataset_metric
from models_app import registry
from models_app.models import ModelAlias, RegisteredModel, RegisteredName

from .models import Sweep, SweepTrial
from .planning import PlanInvalid, plan_trials


class SweepsConflict(DomainConflict):
    """The sweep's state does not allow this (cancel a finished sweep, promote before any evaluation)."""


logger = logging.getLogger(__name__)

MAX_CONCURRENCY = 32


class SweepInvalid(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def trial_ollama_name(*, registered_name: str, version: int) -> str:
    """The Ollama name a trial's model is evaluated under (deploy it there, or serve it under that name)."""
    return f"{registered_name}-v{version}"


def sweep_create(
    *,
    owner,
    name: str,
    trainer_name: str,
    dataset_id: int | None,
    base_model: str,
    strategy: str,
    search_space,
    test_set_path: str,
    n_trials: int | None = None,
    seed: int | None = None,
    concurrency: int = 1,
    endpoint: str = "ollama",
    evaluation_base: str = "",
    metric: str | None = None,
    registered_name: str = "",
    validation_dataset_id: int | None = None,
    initial_model_id: int | None = None,
) -> Sweep:
    """Validate, plan the trials and queue the first ``concurrency`` of them after commit.

    ``metric``: any comparable one (``COMPARABLE_METRICS``; the trials' evaluations score its task); none given:
    ``accuracy`` for a classification test set, ``token_f1`` for a generation one, ``exact_match`` for one at
    least half of whose records are answered by a tool call. ``validation_dataset_id``: the records every
    trial validates on (trainers that take a validation dataset), so the trials' validation figures compare.
    ``initial_model_id``: a registry version of the owner's that every trial trains further (a blank ``base_model``
    is its base), e.g. a beta sweep of lora-dpo on a lora-sft chat model.
    """
    trainer = Trainer.objects.filter(name=trainer_name).first()
    if trainer is None or trainer.is_external:
        raise SweepInvalid("trainer", f"no local trainer named {trainer_name!r}")
    dataset = Dataset.objects.filter(id=dataset_id, owner=owner).first() if dataset_id is not None else None
    if dataset is None:
        raise SweepInvalid("dataset", f"no dataset #{dataset_id} of yours")
    if problem := job_services.dataset_format_problem(trainer=trainer, dataset=dataset):
        raise SweepInvalid("dataset", problem)
    initial = None
    if initial_model_id is not None:
        initial, problem = job_services.initial_adapter_for(owner=owner, model_id=initial_model_id, trainer=trainer)
        if problem:
            raise SweepInvalid("initial_model", problem)
        base_model = base_model.strip() or initial.base_model
        if base_model != initial.base_model:
            raise SweepInvalid(
                "base_model", f"{initial.name} is an adapter on {initial.base_model}: its trials train on that base"
            )
    if not base_model.strip():
        raise SweepInvalid("base_model", "required (it may be left out only with initial_model: its base)")
    validation = None
    if validation_dataset_id is not None:
        validation = Dataset.objects.filter(id=validation_dataset_id, owner=owner).first()
        problem = job_services.validation_dataset_problem(
            trainer=trainer, dataset=dataset, validation=validation, validation_dataset_id=validation_dataset_id
        )
        if problem:
            raise SweepInvalid("validation_dataset", problem)
    if not isinstance(concurrency, int) or not 1 <= concurrency <= MAX_CONCURRENCY:
        raise SweepInvalid("concurrency", f"must be between 1 and {MAX_CONCURRENCY}")
    local = _check_endpoint(endpoint)
    evaluation_base = (evaluation_base or base_model).strip()
    if local:
        _check_local_base(evaluation_base)
    if not (name or "").strip():
        raise SweepInvalid("name", "may not be blank")
    try:
        trials = plan_trials(
            schema=trainer.hyperparameter_schema, strategy=strategy, space=search_space, seed=seed, n_trials=n_trials
        )
    except PlanInvalid as exc:
        raise SweepInvalid(exc.field, str(exc)) from None
    try:
        test_set = test_set_resolve(user=owner, path=test_set_path)
    except EvaluationsInvalid as exc:
        raise SweepInvalid("test_set_path", exc.errors.get("test_set_path", str(exc))) from None
    try:
        metric = dataset_metric(metric, dataset=test_set.dataset)
    except ValueError as exc:
        raise SweepInvalid("metric", str(exc)) from None
    with transaction.atomic():
        sweep = Sweep.objects.create(
            owner=owner,
            name=name.strip()[:200],
            trainer=trainer,
            dataset_id=dataset_id,
            base_model=base_model,
            registered_name="pending",
            strategy=strategy,
            search_space=search_space,
            seed=seed,
            n_trials=len(trials),
            concurrency=concurrency,
            test_set_path=test_set_path,
            endpoint=endpoint,
            evaluation_base=evaluation_base,
            metric=metric,
            validation_dataset=validation,
            validation_dataset_name=validation.name[:200] if validation is not None else "",
            initial_model_id=initial.model_id if initial is not None else None,
            initial_model_name=initial.name[:200] if initial is not None else "",
        )
        try:
            # Training a version further: by default its trials are versions of its name (and meet its champion).
            fallback = (initial.registered_name if initial is not None else "") or f"sweep-{sweep.id}"
            chosen = check_registered_name(registered_name or fallback)
        except InvalidRegisteredName as exc:
            raise SweepInvalid("registered_name", str(exc)) from None
        Sweep.objects.filter(id=sweep.id).update(registered_name=chosen)
        sweep.registered_name = chosen
        SweepTrial.objects.bulk_create(
            [SweepTrial(sweep=sweep, index=index, hyperparameters=hp) for index, hp in enumerate(trials, start=1)]
        )
        transaction.on_commit(lambda: _enqueue_advance(sweep.id))
    return sweep


def _enqueue_advance(sweep_id: int) -> None:
    from .tasks import sweep_advance

    sweep_advance.delay(sweep_id)


def _trial_busy(trial: SweepTrial) -> bool:
    """Whether a trial holds a concurrency slot: training, waiting for its model, or being evaluated."""
    job = trial.job
    if job is None:
        return False
    if job.status in (Job.Status.PENDING, Job.Status.QUEUED, Job.Status.RUNNING):
        return True
    if job.status != Job.Status.SUCCEEDED or trial.error:
        return False
    if trial.evaluation is None or trial.evaluation.status in Evaluation.UNFINISHED:
        return True
    return trial.champion_evaluation is not None and trial.champion_evaluation.status in Evaluation.UNFINISHED


def _trial_settled(trial: SweepTrial) -> bool:
    if trial.job is None:
        return bool(trial.error)
    return not _trial_busy(trial)


def _champion_of(sweep: Sweep) -> RegisteredModel | None:
    alias = (
        ModelAlias.objects.select_related("model")
        .filter(registered_name__owner_id=sweep.owner_id, registered_name__name=sweep.registered_name, alias="champion")
        .first()
    )
    return alias.model if alias is not None else None


def _check_endpoint(name) -> bool:
    """The sweep's evaluation endpoint (by name, the operator's); whether it is the local engine."""
    from inference.base import Refused
    from inference.selectors import endpoint_usable

    if not isinstance(name, str) or not name.strip():
        raise SweepInvalid("endpoint", "must be the name of an inference endpoint (GET /api/v1/inference/endpoints)")
    try:
        return endpoint_usable(name=name.strip()).kind == "local"
    except Refused as exc:
        raise SweepInvalid("endpoint", str(exc)) from None


def _check_local_base(name: str) -> None:
    from finetune_studio.base_models import BaseModelRefused, base_model_resolve

    try:
        base_model_resolve(name, loadable=True)
    except BaseModelRefused as exc:
        raise SweepInvalid("evaluation_base", f"on the local endpoint, {exc}") from None


def trial_evaluation_request(*, sweep: Sweep, model: RegisteredModel, trial_index: int, against=None) -> dict:
    """The ``evaluation_start`` arguments for a trial's model, against the base or ``against`` (a champion).

    On the local endpoint the trial is its own LoRA adapter on its base (no served name: ``fine_tuned_name``
    left out), compared against the base only: one evaluation asks one registry adapter, so the champion is
    compared through the gate, which pairs the two versions' evaluations against the base. Elsewhere the trial
    is asked under its served name (``<registered_name>-v<N>``, or its deployed Ollama name). The evaluation's
    task is the one whose comparisons report the sweep's metric (a generation for ``token_f1``), so the
    ranking finds its numbers whatever the evaluation would have guessed from the test set.
    """
    label = "the base" if against is None else f"the champion v{against.version}"
    request = {
        "user": sweep.owner,
        "model": model,
        "test_set_path": sweep.test_set_path,
        "endpoint": sweep.endpoint,
        "task": task_of_metric(sweep.metric) or CLASSIFICATION,
        "name": f"{sweep.name} trial {trial_index} vs {label}",
    }
    if _endpoint_is_local(sweep.endpoint):
        if against is not None:
            raise SweepInvalid(
                "endpoint", "on the local endpoint a trial is compared with the champion through the gate"
            )
        return {**request, "base_model_name": sweep.evaluation_base}
    fine_tuned = model.ollama_name or trial_ollama_name(registered_name=sweep.registered_name, version=model.version)
    base = sweep.evaluation_base if against is None else default_fine_tuned_name(against)
    return {**request, "base_model_name": base, "fine_tuned_name": fine_tuned}


def _endpoint_is_local(name: str) -> bool:
    from inference.base import Refused
    from inference.selectors import endpoint_get

    try:
        return endpoint_get(name=name).kind == "local"
    except Refused:
        return False  # evaluation_start names the reason


def _start_evaluation(sweep: Sweep, trial: SweepTrial, model: RegisteredModel) -> None:
    """Against the base; and against the champion when the name has one (another version) and the endpoint
    can ask both versions in one evaluation (not local: see ``trial_evaluation_request``)."""
    champion = _champion_of(sweep)
    baselines = [("evaluation", None, "the base")]
    if champion is not None and champion.id != model.id and not _endpoint_is_local(sweep.endpoint):
        baselines.append(("champion_evaluation", champion, f"the champion v{champion.version}"))
    for field, against, label in baselines:
        try:
            evaluation = evaluation_start(
                **trial_evaluation_request(sweep=sweep, model=model, trial_index=trial.index, against=against)
            )
        except EvaluationsInvalid as exc:
            SweepTrial.objects.filter(id=trial.id).update(error=f"evaluation vs {label} not started: {exc}"[:2000])
            return
        SweepTrial.objects.filter(id=trial.id).update(**{field: evaluation})


def _start_job(sweep: Sweep, trial: SweepTrial) -> None:
    if sweep.validation_dataset_name and sweep.validation_dataset_id is None:
        # Holding out part of the training records instead would make this trial's figures incomparable.
        error = f"job not created: the sweep's validation dataset {sweep.validation_dataset_name!r} was deleted"
        SweepTrial.objects.filter(id=trial.id).update(error=error[:2000])
        return
    if sweep.initial_model_name and sweep.initial_model_id is None:
        # A new adapter instead would not be the trial the sweep was asked for.
        error = f"job not created: {sweep.initial_model_name}, the version the sweep trains further, was deleted"
        SweepTrial.objects.filter(id=trial.id).update(error=error[:2000])
        return
    try:
        job = job_services.job_create(
            owner=sweep.owner,
            name=f"{sweep.name} trial {trial.index}",
            base_model=sweep.base_model,
            dataset_id=sweep.dataset_id,
            trainer_name=sweep.trainer.name,
            hyperparameters_given=trial.hyperparameters,
            registered_name=sweep.registered_name,
            validation_dataset_id=sweep.validation_dataset_id,
            initial_model_id=sweep.initial_model_id,
        )
    except job_services.JobsInvalid as exc:
        SweepTrial.objects.filter(id=trial.id).update(error=f"job not created: {exc}"[:2000])
        return
    SweepTrial.objects.filter(id=trial.id).update(job=job)


def sweep_advance(*, sweep_id: int) -> Sweep | None:
    """Link finished trials' models, start their evaluations, start trials up to the concurrency limit,
    and settle the sweep once every trial is done. Safe to call any number of times, concurrently."""
    with transaction.atomic():
        sweep = Sweep.objects.select_for_update().select_related("owner", "trainer").filter(id=sweep_id).first()
        if sweep is None or sweep.status != Sweep.Status.RUNNING:
            return sweep
        trials = list(
            sweep.trials.select_related("job", "evaluation", "champion_evaluation", "model").order_by("index")
        )
        for trial in trials:
            job = trial.job
            if job is None or job.status != Job.Status.SUCCEEDED or trial.error:
                continue
            if trial.model is None:
                trial.model = RegisteredModel.objects.filter(job=job).first()
                if trial.model is None:
                    continue  # the model is still being registered; its model_created signal brings us back
                SweepTrial.objects.filter(id=trial.id).update(model=trial.model)
            if trial.evaluation is None:
                _start_evaluation(sweep, trial, trial.model)
                trial.refresh_from_db()
        busy = sum(1 for trial in trials if _trial_busy(trial))
        for trial in trials:
            if busy >= sweep.concurrency:
                break
            if trial.job is None and not trial.error:
                _start_job(sweep, trial)
                trial.refresh_from_db()
                busy += 1 if trial.job is not None else 0
        if all(_trial_settled(trial) for trial in trials):
            now = timezone.now()
            Sweep.objects.filter(id=sweep.id, status=Sweep.Status.RUNNING).update(
                status=Sweep.Status.COMPLETED, finished_at=now
            )
            sweep.status, sweep.finished_at = Sweep.Status.COMPLETED, now
        _publish(sweep)
    return sweep


def _publish(sweep: Sweep) -> None:
    publish_event_on_commit(
        user_channel(sweep.owner_id),
        "sweep",
        {"id": sweep.id, "status": sweep.status, "url": f"/sweeps/{sweep.id}/"},
    )


def sweep_cancel(*, sweep_id: int) -> Sweep:
    """running → cancelled; its queued and running jobs and unfinished evaluations are cancelled too."""
    with transaction.atomic():
        now = timezone.now()
        moved = Sweep.objects.filter(id=sweep_id, status=Sweep.Status.RUNNING).update(
            status=Sweep.Status.CANCELLED, finished_at=now
        )
        sweep = Sweep.objects.get(id=sweep_id)
        if not moved:
            raise SweepsConflict(f"sweep #{sweep_id} is already {sweep.status}")
        for trial in sweep.trials.select_related("job", "evaluation", "champion_evaluation"):
            if trial.job is not None and trial.job.status in job_services.ACTIVE:
                with contextlib.suppress(job_services.JobsConflict):  # it finished meanwhile
                    job_services.job_cancel(job_id=trial.job_id)
            for evaluation in (trial.evaluation, trial.champion_evaluation):
                if evaluation is not None and evaluation.status in Evaluation.UNFINISHED:
                    with contextlib.suppress(EvaluationsConflict):  # it finished meanwhile
                        evaluation_cancel(evaluation=evaluation)
        _publish(sweep)
    return sweep


def sweep_promote_best(*, sweep_id: int, moved_by, alias: str = "champion") -> dict:
    """Move ``alias`` to the best-ranked trial's version, through the registry's gate (its refusals stand)."""
    from .selectors import sweep_ranking

    sweep = Sweep.objects.get(id=sweep_id)
    ranking = sweep_ranking(sweep=sweep)
    if not ranking["best"]:
        raise SweepsConflict("no trial has been evaluated yet: nothing to promote")
    registered = RegisteredName.objects.get(owner_id=sweep.owner_id, name=sweep.registered_name)
    version = ranking["best"]["version"]
    registry.alias_move(registered_name=registered, alias=alias, version=version, moved_by=moved_by)
    return {"registered_name": registered.name, "alias": alias, "version": version}
