"""Deployment parity: does the model Ollama serves answer as the adapter that was trained?

A deployed model can answer differently from its adapter (a wrong chat template, stop tokens, a quantised
base). A parity check is one evaluation with the adapter, run by the studio's own engine on the ``local``
endpoint, as its first candidate and the live Ollama deployment (plus, optionally, variants the user built
among the deployment's tags, e.g. ``name:q8_0``) on the ``ollama`` endpoint after it: a classification
evaluation, or a generation one for a chat or instruction test set (the test set's task unless one is
given). The engine asks, stores and scores as for any evaluation; this module adds what a parity check reads:

- the agreement rate: the share of examples where the deployed model gave the same answer as the adapter
  (the parsed label, or the normalised text when neither could be parsed; for generation, the normalised
  text, or the same tool calls with the same arguments when the answers call tools);
- each metric's difference (deployed − local) with the paired bootstrap 95 % CI, and for classification
  McNemar's exact test (``metrics.compute_results`` / ``generation.compute_results``);
- the examples whose answers changed;
- the verdict: the live deployment is *drifted* when its primary metric (accuracy; token F1 for generation)
  is more than ``PARITY_MAX_DROP`` below the adapter's (the point estimate: a CI bound would flag every small
  test set, or none). Recorded through
  ``models_app.deployments.model_deploy_parity_record`` on the digest that was live when the check started;
  when another digest has been deployed since, nothing is marked and the report says so.

Variants are reported beside it and never mark the deployment: they are not what is live.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.conf import settings
from django.db import transaction

from . import generation, metrics, services
from .generation_metrics import comparable
from .models import Evaluation

LOCAL_ENDPOINT = "local"
OLLAMA_ENDPOINT = "ollama"
MAX_VARIANTS = 4
CHANGED_SHOWN = 50
# Per task: the metric the verdict reads, and the one shown beside it.
METRICS_READ = {
    generation.CLASSIFICATION: (metrics.PRIMARY_METRIC, "f1_macro"),
    generation.GENERATION: (generation.HEADLINE_METRIC, "chrf"),
}


def _repository(name: str) -> str:
    """``ns/model:tag`` → ``ns/model`` (a tag is what follows the last colon after the last slash)."""
    head, _slash, last = name.rpartition("/")
    return (head + "/" if head else "") + last.split(":", 1)[0]


def _with_tag(name: str) -> str:
    return name if ":" in name.rpartition("/")[2] else f"{name}:latest"


def _check_variants(variants, live_name: str, errors: dict) -> list[str]:
    """Names of Ollama tags of the live deployment's repository, other than the live one; reasons in ``errors``."""
    if variants in (None, ""):
        return []
    if not isinstance(variants, list | tuple) or not all(isinstance(item, str) for item in variants):
        errors["variants"] = "must be a list of Ollama model names"
        return []
    if len(variants) > MAX_VARIANTS:
        errors["variants"] = f"at most {MAX_VARIANTS} variants per parity check"
        return []
    repository = _repository(live_name)
    checked: list[str] = []
    for given in variants:
        name = services._check_model_name(given, "variants", errors)
        if name is None:
            return []
        if _repository(name) != repository or ":" not in name.rpartition("/")[2]:
            errors["variants"] = (
                f"{name[:60]!r} is not a tag of the deployment: a variant is named {repository}:<tag> "
                "(e.g. a q8_0 build you created in Ollama)"
            )
            return []
        if _with_tag(name) == _with_tag(live_name) or _with_tag(name) in {_with_tag(item) for item in checked}:
            errors["variants"] = f"{name!r} is named twice (the live deployment is always compared)"
            return []
        checked.append(name)
    return checked


def parity_check_start(
    *,
    user,
    model,
    test_set_path: str,
    variants: list[str] | None = None,
    labels: list[str] | None = None,
    task: str | None = None,
    max_examples: int | None = None,
    concurrency: int | None = None,
    timeout: int | None = None,
    name: str = "",
) -> Evaluation:
    """Queue a parity check of ``model``'s live Ollama deployment against its own adapter on the local engine.

    ``task``: ``classification`` or ``generation``; by default the test set's task (as for any evaluation).

    ``model`` must be visible to ``user`` (the caller's selector gives 404). Refused with the reason
    (EvaluationsInvalid): no live deployment, no adapter in the registry, a base the local engine cannot
    load, a variant that is not a tag of the deployment, and everything ``evaluation_start`` refuses.
    The digest live now is stored with the check: the verdict is recorded against it, and only it.
    """
    errors: dict[str, str] = {}
    live_name = (model.ollama_name or "").strip()
    digest = (model.ollama_digest or "").strip()
    if not live_name or not digest:
        errors["model"] = "this model has no live Ollama deployment: deploy it to Ollama first"
    checked = _check_variants(variants, live_name, errors) if live_name else []
    if errors:
        raise services.EvaluationsInvalid(errors)
    plan = {
        "digest": digest,
        "deployed": live_name,
        "variants": checked,
        "max_drop": float(settings.PARITY_MAX_DROP),
    }
    return services.evaluation_start(
        user=user,
        model=model,
        test_set_path=test_set_path,
        base_endpoint=LOCAL_ENDPOINT,
        base_model_name=model.base_model or "",
        fine_tuned_endpoint=OLLAMA_ENDPOINT,
        fine_tuned_names=[live_name, *checked],
        labels=labels,
        max_examples=max_examples,
        concurrency=concurrency,
        timeout=timeout,
        name=name or f"Parity of {live_name}",
        task=task,
        parity=plan,
    )


def _answer(prediction) -> str:
    """What counts as "the same answer": the parsed label, else the normalised text (or the error)."""
    if prediction.parsed_label is not None:
        return f"label:{prediction.parsed_label}"
    return "unparsed:" + comparable(prediction.prediction_text or prediction.error or "")


def _shown(prediction) -> str:
    if prediction.parsed_label is not None:
        return prediction.parsed_label
    return (prediction.error or prediction.prediction_text or "")[:200]


def _right(prediction, task: str) -> bool:
    if task == generation.GENERATION:
        return float((prediction.scores or {}).get("exact_match", 0.0)) == 1.0
    return prediction.parsed_label == prediction.expected


def _interval(found: dict | None) -> dict | None:
    return {key: found.get(key) for key in ("delta", "ci_low", "ci_high")} if found else None


def _comparison(results: dict, name: str) -> tuple[dict, dict, dict | None]:
    """(difference per metric, interval per metric, McNemar or None) of candidate ``name`` against the first."""
    if results.get("task") == generation.GENERATION:
        by_metric = (results.get("comparisons_by_candidate") or {}).get(name) or results["comparisons"]
        difference = {metric: found["delta"] for metric, found in by_metric.items()}
        return difference, {metric: _interval(found) for metric, found in by_metric.items()}, None
    comparison = (results.get("comparisons") or {}).get(name) or {
        "improvement": results["improvement"],
        "significance": results["significance"],
    }
    bootstrap = comparison["significance"].get("bootstrap") or {}
    intervals = {metric: _interval(found) for metric, found in bootstrap.items() if isinstance(found, dict)}
    return comparison["improvement"], intervals, comparison["significance"].get("mcnemar")


def _points(value) -> str:
    return f"{100 * (value or 0):+.1f}"


def parity_report(predictions: Sequence, *, candidates: Sequence[str], results: dict, plan: dict) -> dict:
    """The ``parity`` section of a parity check's results (see the module's docstring).

    ``candidates``: the local adapter first, the live deployment second, then the variants; ``results``: what
    ``metrics.compute_results`` (or, for a generation check, ``generation.compute_results``) made of the same
    predictions.
    """
    task = results.get("task") or generation.CLASSIFICATION
    primary, secondary = METRICS_READ[task]
    local_name, deployed_name = candidates[0], candidates[1]
    paired = metrics.paired_predictions(predictions, candidates)
    local = paired[local_name]
    max_drop = float(plan.get("max_drop", settings.PARITY_MAX_DROP))
    rows = []
    for position, name in enumerate(candidates[1:]):
        other = paired[name]
        difference, intervals, mcnemar = _comparison(results, name)
        changed = [
            {
                "index": mine.index,
                "input": mine.input_text,
                "expected": mine.expected,
                "local_answer": _shown(mine),
                "deployed_answer": _shown(theirs),
                "local_correct": _right(mine, task),
                "deployed_correct": _right(theirs, task),
            }
            for mine, theirs in zip(local, other, strict=True)
            if _answer(mine) != _answer(theirs)
        ]
        compared = len(local)
        drop = -difference[primary]
        row = {
            "model": name,
            "role": "deployed" if position == 0 else "variant",
            "examples_compared": compared,
            "agreement": round((compared - len(changed)) / compared, 6) if compared else None,
            "changed_count": len(changed),
            "changed": changed[:CHANGED_SHOWN],
            "difference": difference,
            "intervals": intervals,
            "primary": {"metric": primary, **(intervals.get(primary) or {"delta": difference[primary]})},
            "secondary": {"metric": secondary, **(intervals.get(secondary) or {"delta": difference.get(secondary)})},
            "mcnemar": mcnemar,
            # A rounding hair (1e-9) is not a drop: the deltas are rounded to 6 places already.
            "beyond_bound": drop > max_drop + 1e-9,
        }
        if task == generation.CLASSIFICATION:
            row["accuracy"], row["f1_macro"] = intervals.get("accuracy"), intervals.get("f1_macro")
        rows.append(row)
    deployed = rows[0]
    drifted = deployed["beyond_bound"]
    label = primary.replace("_", " ")
    interval = deployed["primary"]
    summary = (
        f"{'Drifted' if drifted else 'Consistent'}: {deployed_name} gave the adapter's answer on "
        f"{deployed['examples_compared'] - deployed['changed_count']} of {deployed['examples_compared']} examples "
        f"(agreement {deployed['agreement']:.3f}); {label} {_points(interval['delta'])} points "
        f"(95 % CI {_points(interval.get('ci_low'))} to {_points(interval.get('ci_high'))})"
        + (f", McNemar p = {deployed['mcnemar']['p_value']:.3g}" if deployed["mcnemar"] else "")
        + f"; the bound is a drop of {100 * max_drop:.1f} points."
    )
    return {
        "task": task,
        "local": local_name,
        "deployed": deployed_name,
        "digest": plan.get("digest"),
        "primary_metric": primary,
        "max_drop": max_drop,
        "rule": f"drifted when the deployed model's {label} is more than max_drop below the adapter's",
        "agreement": deployed["agreement"],
        "drifted": drifted,
        "candidates": rows,
        "summary": summary,
        # Filled in when the verdict is recorded on the deployment (or refused because the digest changed).
        "recorded": None,
    }


def parity_verdict_record(*, evaluation: Evaluation) -> dict:
    """Mark (or clear) the deployment's drift from a completed parity check; the outcome goes into its results.

    On the digest live when the check started: if the model has been redeployed since, the mark is left
    alone (ParityStale) and the report says so. Runs inside the caller's transaction.
    """
    from models_app.deployments import ParityStale, model_deploy_parity_record

    results = dict(evaluation.results)
    report = dict(results["parity"])
    deployed = report["candidates"][0]
    summary = {
        "evaluation_id": evaluation.id,
        "agreement": report["agreement"],
        "metric": report["primary_metric"],
        "difference": deployed["difference"][report["primary_metric"]],
        "max_drop": report["max_drop"],
        "examples_compared": deployed["examples_compared"],
        "variants": {row["model"]: row["agreement"] for row in report["candidates"][1:]},
    }
    try:
        with transaction.atomic():
            model_deploy_parity_record(
                model_id=evaluation.model_id, digest=report["digest"], drifted=report["drifted"], summary=summary
            )
    except ParityStale as exc:
        report["recorded"] = False
        report["not_recorded_reason"] = (
            f"{exc}: the model was redeployed (or its deployment removed) during the check, so this verdict "
            "speaks of a deployment that is no longer live"
        )
    else:
        report["recorded"] = True
    results["parity"] = report
    Evaluation.objects.filter(id=evaluation.id).update(results=results)
    evaluation.results = results
    return report
