"""Metrics of an evaluation, from stored predictions: scikit-learn scores, significance, examples.

No Django. ``compute_results`` turns predictions into the seed's shape:
``{"base": {...}, "fine_tuned": {...}, "improvement": {metric: fine_tuned - base}}``
plus ``significance`` (McNemar's exact test and a paired bootstrap), and, with more
than one fine-tuned candidate, ``candidates`` and ``comparisons`` keyed by model name;
then ``fine_tuned`` and its comparison are the best candidate's (``headline``).
An unparseable answer is wrong; it has its own column in the confusion matrix.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import binomtest
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from .generation_metrics import minimum_detectable_effect, verdict_for

UNPARSEABLE = "unparseable"
_MISSING = "\x00unparseable"  # internal stand-in for "no label": cannot collide with a real label
COMPARED_METRICS = (
    "accuracy",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "precision_weighted",
    "recall_weighted",
    "f1_weighted",
    "unparseable_rate",
)
# What "best" means when several fine-tuned models are compared: the verdict is on accuracy too.
PRIMARY_METRIC = "accuracy"
TIE_BREAKER = "f1_macro"
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 20240601
EXAMPLES_SHOWN = 20


def _r(value: float) -> float:
    return round(float(value), 6)


def candidate_metrics(predictions: Sequence, labels: Sequence[str]) -> dict:
    """Scores of one candidate; ``predictions`` are that candidate's, one per example."""
    labels = list(labels)
    y_true = [p.expected for p in predictions]
    y_pred = [p.parsed_label if p.parsed_label is not None else _MISSING for p in predictions]
    n = len(predictions)
    if n == 0:
        raise ValueError("no predictions to score")
    accuracy = accuracy_score(y_true, y_pred)
    macro = precision_recall_fscore_support(y_true, y_pred, labels=labels, average="macro", zero_division=0)
    weighted = precision_recall_fscore_support(y_true, y_pred, labels=labels, average="weighted", zero_division=0)
    per_p, per_r, per_f, per_s = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average=None, zero_division=0
    )
    matrix = confusion_matrix(y_true, y_pred, labels=[*labels, _MISSING])[: len(labels)]
    unparseable = sum(1 for p in predictions if p.parsed_label is None)
    latencies = [p.latency_ms for p in predictions if p.latency_ms is not None and not p.error]
    tokens = sum(p.eval_count or 0 for p in predictions if p.eval_duration_ns)
    duration_ns = sum(p.eval_duration_ns or 0 for p in predictions if p.eval_count)
    return {
        "examples": n,
        "correct": int(sum(1 for p in predictions if p.parsed_label == p.expected)),
        "accuracy": _r(accuracy),
        "precision_macro": _r(macro[0]),
        "recall_macro": _r(macro[1]),
        "f1_macro": _r(macro[2]),
        "precision_weighted": _r(weighted[0]),
        "recall_weighted": _r(weighted[1]),
        "f1_weighted": _r(weighted[2]),
        "per_label": {
            label: {"precision": _r(p), "recall": _r(r), "f1": _r(f), "support": int(s)}
            for label, p, r, f, s in zip(labels, per_p, per_r, per_f, per_s, strict=True)
        },
        "confusion_matrix": {
            "labels": labels,
            "columns": [*labels, UNPARSEABLE],
            "matrix": matrix.astype(int).tolist(),
        },
        "unparseable": unparseable,
        "unparseable_rate": _r(unparseable / n),
        "errors": sum(1 for p in predictions if p.error),
        "latency_ms": {
            "p50": _r(np.percentile(latencies, 50)) if latencies else None,
            "p95": _r(np.percentile(latencies, 95)) if latencies else None,
            "mean": _r(np.mean(latencies)) if latencies else None,
        },
        "tokens_per_second": _r(tokens / (duration_ns / 1e9)) if duration_ns else None,
    }


def mcnemar_exact(base_correct: np.ndarray, other_correct: np.ndarray) -> dict:
    """Exact (binomial) McNemar test on the discordant pairs of paired correctness."""
    base_only = int(np.sum(base_correct & ~other_correct))
    other_only = int(np.sum(~base_correct & other_correct))
    discordant = base_only + other_only
    p_value = 1.0 if discordant == 0 else binomtest(other_only, discordant, 0.5).pvalue
    return {"base_only_correct": base_only, "fine_tuned_only_correct": other_only, "p_value": float(p_value)}


def _macro_f1_batch(true_codes: np.ndarray, pred_codes: np.ndarray, n_labels: int) -> np.ndarray:
    """Macro F1 (zero_division=0, averaged over every label) of each row of a (resamples, n) batch."""
    rows = true_codes.shape[0]
    width = n_labels * (n_labels + 1)
    cells = true_codes * (n_labels + 1) + pred_codes + (np.arange(rows) * width)[:, None]
    counts = np.bincount(cells.ravel(), minlength=rows * width).reshape(rows, n_labels, n_labels + 1)
    tp = counts[:, np.arange(n_labels), np.arange(n_labels)]
    predicted = counts[:, :, :n_labels].sum(axis=1)
    actual = counts.sum(axis=2)
    denominator = predicted + actual  # = 2tp + fp + fn
    f1 = np.divide(2 * tp, denominator, out=np.zeros(tp.shape, dtype=float), where=denominator > 0)
    return f1.mean(axis=1)


def paired_bootstrap(
    true_codes: np.ndarray,
    base_codes: np.ndarray,
    other_codes: np.ndarray,
    n_labels: int,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict:
    """95 % percentile CIs of the accuracy and macro-F1 deltas, resampling examples (pairs kept)."""
    rng = np.random.default_rng(seed)
    n = len(true_codes)
    accuracy_deltas = np.empty(resamples)
    f1_deltas = np.empty(resamples)
    base_correct = (base_codes == true_codes).astype(float)
    other_correct = (other_codes == true_codes).astype(float)
    block = max(1, min(resamples, 4_000_000 // max(n, 1)))
    for start in range(0, resamples, block):
        size = min(block, resamples - start)
        index = rng.integers(0, n, size=(size, n))
        accuracy_deltas[start : start + size] = other_correct[index].mean(axis=1) - base_correct[index].mean(axis=1)
        sampled_true = true_codes[index]
        f1_deltas[start : start + size] = _macro_f1_batch(sampled_true, other_codes[index], n_labels) - (
            _macro_f1_batch(sampled_true, base_codes[index], n_labels)
        )

    def interval(values: np.ndarray) -> dict:
        low, high = np.percentile(values, [2.5, 97.5])
        return {"ci_low": _r(low), "ci_high": _r(high)}

    return {"accuracy": interval(accuracy_deltas), "f1_macro": interval(f1_deltas)}


def compare(base: list, other: list, labels: Sequence[str], base_scores: dict, other_scores: dict) -> dict:
    """Improvement and significance of ``other`` over ``base`` (same examples, same order)."""
    codes = {label: code for code, label in enumerate(labels)}
    missing = len(labels)
    true_codes = np.array([codes[p.expected] for p in base])
    base_codes = np.array([codes.get(p.parsed_label, missing) for p in base])
    other_codes = np.array([codes.get(p.parsed_label, missing) for p in other])
    improvement = {metric: _r(other_scores[metric] - base_scores[metric]) for metric in COMPARED_METRICS}
    mcnemar = mcnemar_exact(base_codes == true_codes, other_codes == true_codes)
    bootstrap = paired_bootstrap(true_codes, base_codes, other_codes, len(labels))
    bootstrap["accuracy"]["delta"] = improvement["accuracy"]
    bootstrap["f1_macro"]["delta"] = improvement["f1_macro"]
    accuracy = bootstrap["accuracy"]
    # Beside the verdict: how small a difference this test set could have shown (80 % power, observed spread).
    mde = minimum_detectable_effect((other_codes == true_codes).astype(float) - (base_codes == true_codes))
    accuracy["minimum_detectable_effect"] = mde
    verdict = verdict_for(accuracy["ci_low"], accuracy["ci_high"])
    f1_verdict = verdict_for(bootstrap["f1_macro"]["ci_low"], bootstrap["f1_macro"]["ci_high"])
    summary = (
        f"{verdict.capitalize()}: accuracy {100 * accuracy['delta']:+.1f} points "
        f"(95 % CI {100 * accuracy['ci_low']:+.1f} to {100 * accuracy['ci_high']:+.1f}); "
        f"macro-F1 {100 * bootstrap['f1_macro']['delta']:+.1f} points ({f1_verdict}); "
        f"McNemar exact p = {mcnemar['p_value']:.3g} over "
        f"{mcnemar['base_only_correct'] + mcnemar['fine_tuned_only_correct']} discordant examples."
    )
    if verdict == "not significant" and mde["mde"] is not None:
        summary += (
            f" With {mde['n']} examples an accuracy difference smaller than {100 * mde['mde']:.1f} points "
            "cannot be told apart (80 % power)."
        )
    return {
        "improvement": improvement,
        "significance": {
            "mcnemar": mcnemar,
            "bootstrap": {**bootstrap, "resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED, "level": 0.95},
            "verdict": verdict,
            "minimum_detectable_effect": mde,
            "f1_verdict": f1_verdict,
            "summary": summary,
        },
    }


def outcome_of(base_correct: bool, other_correct: bool) -> str:
    if other_correct and not base_correct:
        return "fixed"
    if base_correct and not other_correct:
        return "broke"
    return "both_right" if base_correct else "both_wrong"


def _shown(prediction) -> str:
    if prediction.parsed_label is not None:
        return prediction.parsed_label
    return (prediction.error or prediction.prediction_text or "")[:200]


def side_by_side(base: list, other: list, *, limit: int | None = EXAMPLES_SHOWN) -> list[dict]:
    """Examples with both answers, disagreements first (in example order), then both wrong, then both right."""
    rank = {"fixed": 0, "broke": 0, "both_wrong": 1, "both_right": 2}
    rows = []
    for b, o in zip(base, other, strict=True):
        outcome = outcome_of(b.parsed_label == b.expected, o.parsed_label == o.expected)
        winner = {"fixed": "fine_tuned", "broke": "base"}.get(outcome, "tie")
        differing = b.parsed_label != o.parsed_label
        rows.append(
            (
                (rank[outcome], 0 if differing else 1, b.index),
                {
                    "index": b.index,
                    "input": b.input_text,
                    "expected": b.expected,
                    "base_prediction": _shown(b),
                    "fine_tuned_prediction": _shown(o),
                    "base_correct": b.parsed_label == b.expected,
                    "fine_tuned_correct": o.parsed_label == o.expected,
                    "base_unparseable": b.parsed_label is None,
                    "fine_tuned_unparseable": o.parsed_label is None,
                    "winner": winner,
                    "outcome": outcome,
                },
            )
        )
    rows.sort(key=lambda row: row[0])
    chosen = rows if limit is None else rows[:limit]
    return [row for _key, row in chosen]


def paired_predictions(predictions: Sequence, candidates: Sequence[str]) -> dict[str, list]:
    """Each candidate's predictions on the examples every candidate answered, in example order."""
    by_candidate: dict[str, dict[int, object]] = {name: {} for name in candidates}
    for prediction in predictions:
        if prediction.candidate in by_candidate:
            by_candidate[prediction.candidate][prediction.index] = prediction
    common = sorted(set.intersection(*(set(found) for found in by_candidate.values()))) if candidates else []
    return {name: [by_candidate[name][index] for index in common] for name in candidates}


def compute_results(predictions: Sequence, *, labels: Sequence[str], candidates: Sequence[str]) -> tuple[dict, list]:
    """(results, examples) for a base (``candidates[0]``) and one or more fine-tuned candidates.

    ``fine_tuned``, ``improvement``, ``significance`` and the examples describe the headline
    candidate: the best fine-tuned one by PRIMARY_METRIC (ties: TIE_BREAKER, then the order given).
    With more than one fine-tuned candidate, ``headline`` says which and why, and ``comparisons``
    holds every candidate's own improvement and verdict.
    """
    if len(candidates) < 2:
        raise ValueError("an evaluation compares at least two candidates")
    paired = paired_predictions(predictions, candidates)
    if not paired[candidates[0]]:
        raise ValueError("no example was answered by every candidate")
    scores = {name: {"model": name, **candidate_metrics(paired[name], labels)} for name in candidates}
    base_name = candidates[0]
    comparisons = {
        name: compare(paired[base_name], paired[name], labels, scores[base_name], scores[name])
        for name in candidates[1:]
    }
    # sorted() is stable: candidates tied on both metrics keep the order they were given in.
    ranked = sorted(candidates[1:], key=lambda name: (-scores[name][PRIMARY_METRIC], -scores[name][TIE_BREAKER]))
    headline = ranked[0]
    results = {
        "labels": list(labels),
        "examples_evaluated": len(paired[base_name]),
        "base": scores[base_name],
        "fine_tuned": scores[headline],
        "improvement": comparisons[headline]["improvement"],
        "significance": comparisons[headline]["significance"],
    }
    if len(candidates) > 2:
        results["candidates"] = scores
        results["comparisons"] = comparisons
        results["best_fine_tuned"] = headline
        results["headline"] = {
            "model": headline,
            "metric": PRIMARY_METRIC,
            "tie_breaker": TIE_BREAKER,
            "ranking": ranked,
        }
    examples = side_by_side(paired[base_name], paired[headline])
    return results, examples


def summary_of(results: dict) -> dict:
    """The short form kept on the model (``eval_results``): headline scores and the verdict."""
    keep = ("accuracy", "f1_macro", "precision_macro", "recall_macro", "unparseable_rate")
    return {
        "base": {key: results["base"][key] for key in keep} | {"model": results["base"]["model"]},
        "fine_tuned": {key: results["fine_tuned"][key] for key in keep} | {"model": results["fine_tuned"]["model"]},
        "improvement": {key: results["improvement"][key] for key in keep},
        "verdict": results["significance"]["verdict"],
        "summary": results["significance"]["summary"],
        "examples_evaluated": results["examples_evaluated"],
    }
