"""The registry's promotion evidence, read from our evaluations (registered in EvaluationsConfig.ready).

A version may take a gated alias when a completed evaluation of it, on the gate's test set and
endpoint, compared it against the alias's current holder (against the base when there is none),
and the 95 % bootstrap CI of the improvement of the gate's metric has its lower bound above the
threshold. The newest such evaluation decides.
"""

from models_app.evidence import Evidence

from .models import Evaluation
from .services import default_fine_tuned_name

DEFAULT_ENDPOINT = "ollama"


def baseline_names(*, candidate, holder) -> list[str]:
    """What the candidate must have been compared against: the holder's Ollama name, or its base's."""
    if holder is not None:
        return [default_fine_tuned_name(holder)]
    return [name for name in dict.fromkeys([candidate.ollama_base, candidate.base_model]) if name]


def evaluation_endpoint(evaluation: Evaluation) -> str:
    return (evaluation.config or {}).get("endpoint") or DEFAULT_ENDPOINT


def _interval(evaluation: Evaluation, metric: str) -> dict | None:
    results = evaluation.results or {}
    comparisons = results.get("comparisons") or {}
    significance = (comparisons.get(evaluation.fine_tuned_name) or {}).get("significance") or results.get(
        "significance"
    )
    return ((significance or {}).get("bootstrap") or {}).get(metric)


def evaluation_evidence(*, gate, candidate, holder) -> Evidence:
    baselines = baseline_names(candidate=candidate, holder=holder)
    baseline = baselines[0] if baselines else None
    common = {"metric": gate.metric, "threshold": gate.threshold, "baseline": baseline}
    against = f"v{holder.version} ({baseline})" if holder is not None else f"the base ({baseline})"
    wanted = (
        f"a completed evaluation of v{candidate.version} against {against} on {gate.test_set_path} "
        f"through {gate.endpoint}"
    )
    candidates = Evaluation.objects.filter(
        model=candidate,
        status=Evaluation.Status.COMPLETED,
        test_set_path=gate.test_set_path,
        base_model_name__in=baselines,
    ).order_by("-completed_at", "-id")
    evaluation = next((item for item in candidates[:50] if evaluation_endpoint(item) == gate.endpoint), None)
    if evaluation is None:
        return Evidence(passed=False, reason=f"missing {wanted}", missing=[wanted], **common)
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
    reason = (
        f"evaluation #{evaluation.id}: {gate.metric} improvement {delta:+.4f}, 95 % CI [{ci_low:+.4f}, "
        f"{ci_high:+.4f}]; lower bound {comparison} the threshold {gate.threshold:+.4f}"
    )
    return Evidence(
        passed=passed,
        reason=reason,
        evaluation_id=evaluation.id,
        delta=delta,
        ci_low=ci_low,
        ci_high=ci_high,
        **common,
    )
