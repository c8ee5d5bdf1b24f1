"""Metrics against values computed by hand (no Django needed)."""

import numpy as np
import pytest

from evaluations.engine import Prediction
from evaluations.metrics import (
    candidate_metrics,
    compute_results,
    mcnemar_exact,
    paired_bootstrap,
    side_by_side,
    verdict_for,
)

LABELS = ["a", "b"]


def predictions(candidate, expected, answered, **extra):
    return [
        Prediction(
            index=i, candidate=candidate, expected=e, input_text=f"text {i}", parsed_label=p, correct=p == e, **extra
        )
        for i, (e, p) in enumerate(zip(expected, answered, strict=True))
    ]


def test_scores_match_a_hand_computed_confusion_matrix():
    # expected: a a a b b b ; answered: a a b b None a
    #   a: tp=2 fp=1 fn=1 → p=2/3 r=2/3 f1=2/3
    #   b: tp=1 fp=1 fn=2 → p=1/2 r=1/3 f1=2·1/(2·1+1+2)=0.4
    scores = candidate_metrics(predictions("m", list("aaabbb"), ["a", "a", "b", "b", None, "a"]), LABELS)
    assert scores["accuracy"] == pytest.approx(3 / 6, abs=1e-6)
    assert scores["precision_macro"] == pytest.approx((2 / 3 + 1 / 2) / 2, abs=1e-6)
    assert scores["recall_macro"] == pytest.approx((2 / 3 + 1 / 3) / 2, abs=1e-6)
    assert scores["f1_macro"] == pytest.approx((2 / 3 + 0.4) / 2, abs=1e-6)
    assert scores["f1_weighted"] == pytest.approx((3 * 2 / 3 + 3 * 0.4) / 6, abs=1e-6)
    assert scores["per_label"]["b"] == {
        "precision": 0.5,
        "recall": pytest.approx(1 / 3, abs=1e-6),
        "f1": 0.4,
        "support": 3,
    }
    assert scores["confusion_matrix"] == {
        "labels": ["a", "b"],
        "columns": ["a", "b", "unparseable"],
        "matrix": [[2, 1, 0], [1, 1, 1]],
    }
    assert scores["unparseable"] == 1 and scores["unparseable_rate"] == pytest.approx(1 / 6, abs=1e-6)


def test_a_label_never_expected_nor_predicted_scores_zero_in_the_macro_average():
    scores = candidate_metrics(predictions("m", list("aa"), ["a", "a"]), ["a", "b", "c"])
    assert scores["accuracy"] == 1.0
    assert scores["f1_macro"] == pytest.approx(1 / 3, abs=1e-6)  # zero_division=0 over the whole label set


def test_latency_percentiles_and_tokens_per_second():
    rows = predictions("m", list("ab"), list("ab"))
    for row, latency in zip(rows, [10.0, 30.0], strict=True):
        row.latency_ms, row.eval_count, row.eval_duration_ns = latency, 50, 500_000_000
    scores = candidate_metrics(rows, LABELS)
    assert scores["latency_ms"]["p50"] == 20.0
    assert scores["latency_ms"]["p95"] == pytest.approx(29.0)
    assert scores["tokens_per_second"] == 100.0  # 100 tokens in 1 s


def test_mcnemar_exact_uses_only_the_discordant_pairs():
    base = np.array([True, True, False, False, False, True])
    other = np.array([True, False, True, True, True, True])
    result = mcnemar_exact(base, other)
    assert (result["base_only_correct"], result["fine_tuned_only_correct"]) == (1, 3)
    # Two-sided exact binomial on 4 discordant pairs, 3 vs 1: P = 2 · (C(4,0)+C(4,1)) / 16 = 10/16
    assert result["p_value"] == pytest.approx(0.625)
    assert mcnemar_exact(base, base)["p_value"] == 1.0


def test_the_bootstrap_interval_is_reproducible_and_brackets_the_delta():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 200)
    base = np.where(rng.random(200) < 0.6, truth, 1 - truth)
    better = np.where(rng.random(200) < 0.9, truth, 1 - truth)
    first = paired_bootstrap(truth, base, better, 2, resamples=500)
    assert first == paired_bootstrap(truth, base, better, 2, resamples=500)
    delta = (better == truth).mean() - (base == truth).mean()
    assert first["accuracy"]["ci_low"] < delta < first["accuracy"]["ci_high"]
    assert first["accuracy"]["ci_low"] > 0
    same = paired_bootstrap(truth, base, base, 2, resamples=200)
    assert same["accuracy"] == {"ci_low": 0.0, "ci_high": 0.0}


def test_verdicts_in_plain_words():
    assert verdict_for(0.01, 0.2) == "significant improvement"
    assert verdict_for(-0.2, -0.01) == "significant regression"
    assert verdict_for(-0.05, 0.1) == "not significant"
    assert verdict_for(0.0, 0.1) == "not significant"


def test_results_keep_the_seed_shape_and_say_not_significant_for_a_small_difference():
    expected = list("abababab")
    base = predictions("base", expected, list("abababaa"))
    tuned = predictions("tuned", expected, list("ababab" + "ab"))
    results, examples = compute_results(base + tuned, labels=LABELS, candidates=["base", "tuned"])
    assert set(results) >= {"base", "fine_tuned", "improvement", "significance"}
    assert "candidates" not in results
    assert results["improvement"]["accuracy"] == pytest.approx(1 / 8, abs=1e-6)
    assert results["significance"]["verdict"] == "not significant"
    assert results["significance"]["mcnemar"]["p_value"] == 1.0
    assert examples[0] == {
        "index": 7,
        "input": "text 7",
        "expected": "b",
        "base_prediction": "a",
        "fine_tuned_prediction": "b",
        "base_correct": False,
        "fine_tuned_correct": True,
        "base_unparseable": False,
        "fine_tuned_unparseable": False,
        "winner": "fine_tuned",
        "outcome": "fixed",
    }


def test_examples_put_disagreements_first_then_both_wrong_and_stop_at_twenty():
    expected = ["a"] * 30
    base_answers = ["a"] * 20 + ["b"] * 5 + [None] * 5
    tuned_answers = ["a"] * 18 + ["b", "b"] + ["a"] * 5 + ["b"] * 5
    base = predictions("base", expected, base_answers)
    tuned = predictions("tuned", expected, tuned_answers)
    rows = side_by_side(base, tuned)
    assert len(rows) == 20
    assert [r["outcome"] for r in rows[:7]] == ["broke", "broke"] + ["fixed"] * 5
    assert [r["outcome"] for r in rows[7:12]] == ["both_wrong"] * 5
    assert rows[7]["base_unparseable"] is True
    assert {r["outcome"] for r in rows[12:]} == {"both_right"}


def test_the_headline_is_the_best_candidate_by_accuracy_then_macro_f1_then_the_order_given():
    expected = list("aabb")
    # All three are right on 3 of 4. A wrong label costs macro F1 more than no label does:
    # "unanswered" (1 + 2/3) / 2, "confused" and its twin (2/3 + 4/5) / 2.
    answers = {
        "base": ["a", "a", "a", "a"],
        "twin": ["a", "b", "b", "b"],
        "confused": ["a", "b", "b", "b"],
        "unanswered": ["a", "a", "b", None],
    }
    everyone = [p for name, labels in answers.items() for p in predictions(name, expected, labels)]
    results, examples = compute_results(everyone, labels=LABELS, candidates=list(answers))
    assert results["headline"] == {
        "model": "unanswered",
        "metric": "accuracy",
        "tie_breaker": "f1_macro",
        "ranking": ["unanswered", "twin", "confused"],
    }
    assert results["fine_tuned"]["model"] == results["best_fine_tuned"] == "unanswered"
    assert results["significance"] == results["comparisons"]["unanswered"]["significance"]
    assert [row["fine_tuned_prediction"] for row in sorted(examples, key=lambda row: row["index"])][:3] == list("aab")
