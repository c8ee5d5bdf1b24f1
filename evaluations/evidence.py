"""The registry's promotion evidence, read from our evaluations (registered in EvaluationsConfig.ready).

A version may take a gated alias when a completed evaluation of it, on the gate's test set and
endpoint, compared it against the alias's current holder (against the base when there is none),
and the 95 % bootstrap CI of the improvement of the gate's metric has its lower bound above the
threshold. The newest such evaluation decides.

The evaluation must be of the gate metric's task (a classification for accuracy and macro-F1, a generation
for exact match, token F1, ROUGE-L and chrF); its interval is the one the evaluation reported for that metric.

The endpoint is the one the evaluation actually asked (``Evaluation.candidate_plans``: every candidate on
the gate's endpoint; evaluations queued before endpoints existed read as ``ollama``).

On the ``local`` endpoint a candidate is the registry's own LoRA adapter on its base, and an evaluation
holds one registry adapter only: two versions cannot be asked side by side. So against a holder the
evidence is two evaluations *each against the base* (the version's and the holder's, same test set, both
on ``local``), and the interval is a paired bootstrap of the version's answers against the holder's over
the examples both answered (read from their stored predictions; the engine is greedy, so the pairing is
the same one a single evaluation would make). The evidence says so (``method``, ``holder_evaluation_id``).
"""

import numpy as np

from finetune_studio.records import CLASSIFICATION, GENERATION, task_of_metric
from models_app.evidence import Evidence

from . import generation_metrics as gm
from . import metrics
from .models import Evaluation, Prediction
from .services import default_fine_tuned_name

DEFAULT_ENDPOINT = "ollama"
LOCAL = "local"
REGISTRY_ADAPTER = "registry_adapter"
METHOD_DIRECT = "one evaluation against the holder (or the base)"
METHOD_PAIRED_VIA_BASE = "two evaluations on local, each against the base, paired by example"


def endpoint_is_local(name: str) -> bool:
    """Whether the gate's endpoint is the studio's own engine (where a candidate is a registry adapter)."""
    from inference.base import Refused
    from inference.selectors import endpoint_get

    try:
        return endpoint_get(name=name).kind == "local"
    except Refused:
        return name == LOCAL


def baseline_names(*, candidate, holder, local: bool = False) -> list[str]:
    """What the candidate must have been compared against: the holder's served name, or its base's.

    On ``local`` it is always the base (the catalogue name): the holder is compared through it.
    """
    if local:
        return [candidate.base_model] if candidate.base_model else []
    if holder is not None:
        return [default_fine_tuned_name(holder)]
    return [name for name in dict.fromkeys([candidate.ollama_base, candidate.base_model]) if name]


def evaluation_endpoint(evaluation: Evaluation) -> str:
    """The endpoint every candidate was asked on, or "mixed" when they differ (that never passes a gate)."""
    endpoints = {plan.get("endpoint") or DEFAULT_ENDPOINT for plan in evaluation.candidate_plans}
    return endpoints.pop() if len(endpoints) == 1 else "mixed"


def _asked_own_adapter(evaluation: Evaluation) -> bool:
    """On local, the fine-tuned candidate must be the model's own adapter, not another catalogue base."""
    plans = evaluation.candidate_plans
    return len(plans) > 1 and plans[1].get("source") == REGISTRY_ADAPTER


def newest_gate_evaluation(*, model, gate, baselines: list[str], local: bool) -> Evaluation | None:
    found = Evaluation.objects.filter(
        model=model,
        status=Evaluation.Status.COMPLETED,
        test_set_path=gate.test_set_path,
        base_model_name__in=baselines,
    ).order_by("-completed_at", "-id")
    task = task_of_metric(gate.metric)
    for item in found[:50]:
        if (
            evaluation_task(item) == task
            and evaluation_endpoint(item) == gate.endpoint
            and (not local or _asked_own_adapter(item))
        ):
            return item
    return None


def evaluation_task(evaluation: Evaluation) -> str:
    """The task the evaluation scored (evaluations from before generation existed were classifications)."""
    return (evaluation.results or {}).get("task") or CLASSIFICATION


def _interval(evaluation: Evaluation, metric: str) -> dict | None:
    results = evaluation.results or {}
    if evaluation_task(evaluation) == GENERATION:
        by_candidate = results.get("comparisons_by_candidate") or {}
        return (by_candidate.get(evaluation.fine_tuned_name) or results.get("comparisons") or {}).get(metric)
    comparisons = results.get("comparisons") or {}
    significance = (comparisons.get(evaluation.fine_tuned_name) or {}).get("significance") or results.get(
        "significance"
    )
    return ((significance or {}).get("bootstrap") or {}).get(metric)


def _paired_interval(candidate_evaluation: Evaluation, holder_evaluation: Evaluation, metric: str) -> dict | str:
    """The paired CI of the version's improvement over the holder, or why there is none."""
    if task_of_metric(metric) == GENERATION:
        return _paired_generation_interval(candidate_evaluation, holder_evaluation, metric)
    labels = (candidate_evaluation.results or {}).get("labels")
    if not labels or labels != (holder_evaluation.results or {}).get("labels"):
        return "the two evaluations do not share a label set (classification on one test set is needed)"

    def answers(evaluation: Evaluation) -> dict[int, Prediction]:
        rows = Prediction.objects.filter(evaluation=evaluation, candidate=evaluation.fine_tuned_name)
        return {row.index: row for row in rows.only("index", "expected", "parsed_label", "correct")}

    mine, theirs = answers(candidate_evaluation), answers(holder_evaluation)
    common = sorted(index for index in set(mine) & set(theirs) if mine[index].expected == theirs[index].expected)
    if not common:
        return "the two evaluations answered no example in common"
    version, holder = [mine[index] for index in common], [theirs[index] for index in common]
    compared = metrics.compare(
        holder,
        version,
        labels,
        metrics.candidate_metrics(holder, labels),
        metrics.candidate_metrics(version, labels),
    )
    return {**compared["significance"]["bootstrap"][metric], "examples": len(common)}


def _paired_generation_interval(candidate_evaluation: Evaluation, holder_evaluation: Evaluation, metric: str):
    """Each example's stored score of ``metric``, the version's minus the holder's, over the examples both
    answered with the same reference: the paired bootstrap a single evaluation of the two would report."""

    def scores(evaluation: Evaluation) -> dict[int, tuple[str, float]]:
        rows = Prediction.objects.filter(evaluation=evaluation, candidate=evaluation.fine_tuned_name)
        return {
            row.index: (row.expected, float(row.scores[metric]))
            for row in rows.only("index", "expected", "scores")
            if metric in (row.scores or {})
        }

    mine, theirs = scores(candidate_evaluation), scores(holder_evaluation)
    common = sorted(index for index in set(mine) & set(theirs) if mine[index][0] == theirs[index][0])
    if not common:
        return "the two evaluations scored no example in common"
    differences = np.array([mine[index][1] - theirs[index][1] for index in common])
    return {**gm.paired_bootstrap_means({metric: differences})[metric], "examples": len(common)}


def evaluation_evidence(*, gate, candidate, holder) -> Evidence:
    local = endpoint_is_local(gate.endpoint)
    baselines = baseline_names(candidate=candidate, holder=holder, local=local)
    baseline = baselines[0] if baselines else None
    via_base = local and holder is not None
    task = task_of_metric(gate.metric)
    common = {
        "metric": gate.metric,
        "threshold": gate.threshold,
        "baseline": f"v{holder.version}" if via_base else baseline,
        "endpoint": gate.endpoint,
        "method": METHOD_PAIRED_VIA_BASE if via_base else METHOD_DIRECT,
    }
    if via_base:
        wanted = [
            f"a completed {task} evaluation of v{version.version} against the base ({baseline}) "
            f"on {gate.test_set_path} through {gate.endpoint}"
            for version in (candidate, holder)
        ]
    else:
        against = f"v{holder.version} ({baseline})" if holder is not None else f"the base ({baseline})"
        wanted = [
            f"a completed {task} evaluation of v{candidate.version} against {against} on {gate.test_set_path} "
            f"through {gate.endpoint}"
        ]
    evaluation = newest_gate_evaluation(model=candidate, gate=gate, baselines=baselines, local=local)
    holder_evaluation = (
        newest_gate_evaluation(model=holder, gate=gate, baselines=baselines, local=local) if via_base else None
    )
    missing = [want for want, found in zip(wanted, [evaluation, holder_evaluation], strict=False) if found is None]
    if missing:
        if via_base:
            missing.append(
                f"(on {gate.endpoint} one evaluation asks one registry adapter, so v{candidate.version} and "
                f"v{holder.version} are each compared against the base and paired by example)"
            )
        return Evidence(
            passed=False,
            reason=f"missing {missing[0]}",
            evaluation_id=evaluation.id if evaluation else None,
            holder_evaluation_id=holder_evaluation.id if holder_evaluation else None,
            missing=missing,
            **common,
        )
    if via_base:
        interval = _paired_interval(evaluation, holder_evaluation, gate.metric)
        if isinstance(interval, str):
            return Evidence(
                passed=False,
                reason=f"evaluations #{evaluation.id} and #{holder_evaluation.id}: {interval}",
                evaluation_id=evaluation.id,
                holder_evaluation_id=holder_evaluation.id,
                missing=[f"a {gate.metric} confidence interval"],
                **common,
            )
    else:
        interval = _interval(evaluation, gate.metric)
    if not interval or interval.get("ci_low") is None:
        return Evidence(
            passed=False,
            reason=f"evaluation #{evaluation.id} has no confidence interval for {gate.metric}",
            evaluation_id=evaluation.id,
            missing=[f"a {gate.metric} confidence interval"],
            **common,
        )
    ci_low, ci_high, delta = interval["ci_low"], interval.get("ci_high"), interval.get("delta")
    passed = ci_low > gate.threshold
    comparison = "above" if passed else "not above"
    source = (
        f"evaluations #{evaluation.id} (v{candidate.version}) and #{holder_evaluation.id} (v{holder.version}), "
        f"each against the base on {gate.endpoint}, paired over {interval['examples']} examples"
        if via_base
        else f"evaluation #{evaluation.id}"
    )
    reason = (
        f"{source}: {gate.metric} improvement {delta:+.4f}, 95 % CI [{ci_low:+.4f}, "
        f"{ci_high:+.4f}]; lower bound {comparison} the threshold {gate.threshold:+.4f}"
    )
    return Evidence(
        passed=passed,
        reason=reason,
        evaluation_id=evaluation.id,
        holder_evaluation_id=holder_evaluation.id if holder_evaluation else None,
        delta=delta,
        ci_low=ci_low,
        ci_high=ci_high,
        **common,
    )
