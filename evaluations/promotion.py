"""Evaluations that feed the registry's promotion gate: "evaluate this version against the champion"."""

from models_app.models import RegisteredModel

from .evidence import DEFAULT_ENDPOINT, baseline_names
from .models import Evaluation
from .services import EvaluationsInvalid, default_fine_tuned_name, evaluation_start


def evaluation_start_for_promotion(*, user, candidate: RegisteredModel, gate, holder) -> Evaluation:
    """Start the evaluation the gate asks for: ``candidate`` against the alias's holder (the base when
    none) on the gate's test set. Raises EvaluationsInvalid like ``evaluation_start``."""
    if gate.endpoint != DEFAULT_ENDPOINT:
        raise EvaluationsInvalid({"endpoint": f"evaluations run through {DEFAULT_ENDPOINT}, not {gate.endpoint}"})
    baselines = baseline_names(candidate=candidate, holder=holder)
    if not baselines:
        raise EvaluationsInvalid({"base_model_name": "the version names no base model to compare against"})
    if holder is not None and holder.id == candidate.id:
        raise EvaluationsInvalid({"model": f"v{candidate.version} already holds {gate.alias}"})
    against = f"v{holder.version}" if holder is not None else "the base"
    return evaluation_start(
        user=user,
        model=candidate,
        test_set_path=gate.test_set_path,
        base_model_name=baselines[0],
        fine_tuned_name=default_fine_tuned_name(candidate),
        name=f"{candidate.registered_name.name} v{candidate.version} vs {against} ({gate.alias} gate)",
    )
