"""Evaluations that feed the registry's promotion gate: "evaluate this version against the champion"."""

from finetune_studio.records import task_of_metric
from models_app.models import RegisteredModel

from .evidence import baseline_names, endpoint_is_local, evaluation_endpoint, newest_gate_evaluation
from .models import Evaluation
from .services import EvaluationsInvalid, default_fine_tuned_name, evaluation_start


def evaluation_start_for_promotion(*, user, candidate: RegisteredModel, gate, holder) -> Evaluation:
    """Start the evaluation the gate asks for: ``candidate`` against the alias's holder (the base when
    none) on the gate's test set, through the gate's endpoint. Raises EvaluationsInvalid like
    ``evaluation_start``.

    On ``local`` the version's own adapter is asked against its base; with a holder, the holder's adapter
    is evaluated against the base too unless a completed or unfinished one exists (an evaluation holds
    one registry adapter: the evidence pairs the two by example). The version's evaluation is returned.
    The evaluation scores the task of the gate's metric (a classification for accuracy and macro-F1, a
    generation for the others), which is the test set's (the gate checks that when it is set).
    """
    task = task_of_metric(gate.metric)
    if holder is not None and holder.id == candidate.id:
        raise EvaluationsInvalid({"model": f"v{candidate.version} already holds {gate.alias}"})
    local = endpoint_is_local(gate.endpoint)
    baselines = baseline_names(candidate=candidate, holder=holder, local=local)
    if not baselines:
        raise EvaluationsInvalid({"base_model_name": "the version names no base model to compare against"})
    against = f"v{holder.version}" if holder is not None else "the base"
    title = f"{candidate.registered_name.name} v{candidate.version} vs {against} ({gate.alias} gate)"
    if not local:
        return evaluation_start(
            user=user,
            model=candidate,
            test_set_path=gate.test_set_path,
            base_model_name=baselines[0],
            fine_tuned_name=default_fine_tuned_name(candidate),
            endpoint=gate.endpoint,
            task=task,
            name=title,
        )
    if holder is not None and holder.base_model != candidate.base_model:
        raise EvaluationsInvalid(
            {
                "model": f"on {gate.endpoint} v{candidate.version} and v{holder.version} are compared through their "
                f"base, and their bases differ ({candidate.base_model} vs {holder.base_model})"
            }
        )
    evaluation = evaluation_start(
        user=user,
        model=candidate,
        test_set_path=gate.test_set_path,
        base_model_name=baselines[0],
        endpoint=gate.endpoint,
        task=task,
        name=f"{title}, against the base on {gate.endpoint}" if holder is not None else title,
    )
    if holder is not None and not _holder_evaluated(user=user, holder=holder, gate=gate, baselines=baselines):
        evaluation_start(
            user=user,
            model=holder,
            test_set_path=gate.test_set_path,
            base_model_name=baselines[0],
            endpoint=gate.endpoint,
            task=task,
            name=f"{holder.registered_name.name} v{holder.version} vs the base "
            f"({gate.alias} gate, for v{candidate.version})",
        )
    return evaluation


def _holder_evaluated(*, user, holder, gate, baselines: list[str]) -> bool:
    if newest_gate_evaluation(model=holder, gate=gate, baselines=baselines, local=True) is not None:
        return True
    unfinished = Evaluation.objects.filter(
        model=holder, test_set_path=gate.test_set_path, base_model_name__in=baselines, status__in=Evaluation.UNFINISHED
    )
    return any(evaluation_endpoint(item) == gate.endpoint for item in unfinished[:50])
