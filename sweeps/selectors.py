"""Sweep reads: permission-aware lookups, each trial's state, and the Holm-corrected ranking."""

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404

from finetune_studio.ownership import visible_to
from finetune_studio.records import CLASSIFICATION, GENERATION, task_of_metric

from .models import Sweep, SweepTrial

SIGNIFICANCE_LEVEL = 0.05
# The test behind each task's p-values: McNemar's on a classification's paired right/wrong answers, a paired
# t-test on a generation's per-example score differences.
P_VALUE_TEST_BY_TASK = {CLASSIFICATION: "mcnemar", GENERATION: "paired t-test"}


def sweep_list(*, user) -> QuerySet[Sweep]:
    return visible_to(Sweep.objects.select_related("trainer"), user)


def sweep_get(*, user, sweep_id) -> Sweep:
    return get_object_or_404(sweep_list(user=user), id=sweep_id)


def trial_state(trial: SweepTrial, *, sweep_status: str) -> str:
    job, evaluation = trial.job, trial.evaluation
    if trial.error and job is None:
        return "not started"
    if job is None:
        return "cancelled" if sweep_status == "cancelled" else "waiting"
    if job.status != "succeeded":
        return {"pending": "queued", "queued": "queued", "running": "training"}.get(job.status, f"job {job.status}")
    if trial.error:
        return "evaluation not started"
    if evaluation is None:
        return "registering model"
    champion = trial.champion_evaluation
    if evaluation.status == "completed" and champion is not None and champion.status in ("pending", "running"):
        return "evaluating against the champion"
    return {"pending": "evaluating", "running": "evaluating", "completed": "evaluated"}.get(
        evaluation.status, f"evaluation {evaluation.status}"
    )


def holm_adjust(p_values: list[float]) -> list[float]:
    """Holm–Bonferroni step-down adjusted p-values, in the input order (monotone, capped at 1)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def _comparison(trial: SweepTrial, metric: str) -> dict | None:
    """The trial's improvement of ``metric`` over the base, its CI and p-value; None until there are all three.

    A classification keeps its intervals under ``significance.bootstrap`` and one McNemar p for the evaluation;
    a generation gives each metric its interval and paired t-test p under ``comparisons`` (evaluations
    completed before that test was added have no p, and are not ranked).
    """
    evaluation = trial.evaluation
    if evaluation is None or evaluation.status != "completed":
        return None
    results = evaluation.results or {}
    if task_of_metric(metric) == GENERATION:
        interval = (results.get("comparisons") or {}).get(metric) or {}
        p_value = interval.get("p_value")
    else:
        significance = results.get("significance") or {}
        interval = (significance.get("bootstrap") or {}).get(metric) or {}
        p_value = (significance.get("mcnemar") or {}).get("p_value")
    if interval.get("delta") is None or p_value is None:
        return None
    score = (results.get("fine_tuned") or {}).get(metric)
    return {
        "delta": interval["delta"],
        "ci_low": interval.get("ci_low"),
        "ci_high": interval.get("ci_high"),
        "p_value": p_value,
        "score": score,
    }


def sweep_trials(*, sweep: Sweep) -> list[SweepTrial]:
    return list(sweep.trials.select_related("job", "evaluation", "champion_evaluation", "model").order_by("index"))


def sweep_ranking(*, sweep: Sweep, trials: list[SweepTrial] | None = None) -> dict:
    """Evaluated trials ranked by the improvement of the sweep's metric over the base (then by CI lower
    bound), with their p-values (``test``: McNemar's for a classification metric, a paired t-test for a
    generation one) Holm-adjusted for the number of evaluated trials: a trial counts as better than the
    base only when its adjusted p < 0.05 and its CI lies above zero."""
    trials = sweep_trials(sweep=sweep) if trials is None else trials
    task = task_of_metric(sweep.metric) or CLASSIFICATION
    rows = []
    for trial in trials:
        comparison = _comparison(trial, sweep.metric)
        if comparison is not None:
            rows.append(
                {
                    "trial": trial.index,
                    "version": trial.model.version if trial.model else None,
                    "hyperparameters": trial.hyperparameters,
                    **comparison,
                }
            )
    for row, adjusted in zip(rows, holm_adjust([row["p_value"] for row in rows]), strict=True):
        row["p_holm"] = round(adjusted, 6)
        row["better_than_base"] = adjusted < SIGNIFICANCE_LEVEL and (row["ci_low"] or 0) > 0
    rows.sort(key=lambda row: (-row["delta"], -(row["ci_low"] or 0), row["trial"]))
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
    return {
        "metric": sweep.metric,
        "task": task,
        "test": P_VALUE_TEST_BY_TASK[task],
        "correction": "holm",
        "evaluated": len(rows),
        "ranking": rows,
        "best": rows[0] if rows else None,
    }
