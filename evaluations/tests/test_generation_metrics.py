"""Generation metrics, their comparison and pairwise judgements, against hand-computed values and sacrebleu."""

import random

import numpy as np
import pytest
from sacrebleu.metrics import CHRF

from evaluations import generation_metrics as gm


def test_normalising_ignores_case_whitespace_and_punctuation():
    assert gm.normalize("  The Answer:\tIS\n42!! ") == "the answer is 42"
    assert gm.normalize("Ünïcode—naïve, «quoted»") == "ünïcode naïve quoted"
    assert gm.exact_match("Paris.", "paris") == 1.0
    assert gm.exact_match("Paris, France", "Paris") == 0.0


def test_against_tool_calls_exact_match_compares_the_calls_not_their_normalised_words():
    from finetune_studio.records import tool_calls_text

    reference = tool_calls_text([("get_weather", {"city": "Paris", "days": 2})])
    assert gm.exact_match(tool_calls_text([("get_weather", {"days": 2.0, "city": "Paris"})]), reference) == 1.0
    for wrong in (
        tool_calls_text([("get_weather", {"city": "paris", "days": 2})]),  # the same words once normalised
        tool_calls_text([("get_weather", {"city": "Paris", "days": "2"})]),
        tool_calls_text([("get_weather", {"city": "Paris", "days": 2}), ("get_weather", {"city": "Paris", "days": 2})]),
        tool_calls_text([("get_weather", '{"city": "Paris", "days": 2')]),  # arguments the model broke
        'get_weather {"city": "Paris", "days": 2}',
    ):
        assert gm.exact_match(wrong, reference) == 0.0, wrong
        assert gm.score_answers({"x": [wrong]}, [reference])["x"]["exact_match"][0] == 0.0
    both = tool_calls_text([("a", {}), ("b", {"n": True})])
    assert gm.exact_match(tool_calls_text([("b", {"n": True}), ("a", {})]), both) == 1.0  # order is not compared
    assert gm.exact_match(tool_calls_text([("b", {"n": 1}), ("a", {})]), both) == 0.0  # true is not 1
    assert gm.token_f1(tool_calls_text([("get_weather", {"city": "paris", "days": 2})]), reference) == 1.0


def test_token_f1_is_the_harmonic_mean_of_token_precision_and_recall():
    assert gm.token_f1("the cat sat", "the cat") == pytest.approx(0.8)  # P 2/3, R 1
    assert gm.token_f1("a a b", "a b b") == pytest.approx(2 / 3)  # bags: one a, one b in common
    assert gm.token_f1("dog", "cat") == 0.0
    assert gm.token_f1("", "") == 1.0 and gm.token_f1("", "cat") == 0.0


def test_rouge_l_is_the_f_measure_of_the_longest_common_subsequence():
    # LCS of "police killed the gunman" and "police kill the gunman" is "police the gunman": 3 of 4 each way
    assert gm.rouge_l("police killed the gunman", "police kill the gunman") == pytest.approx(0.75)
    # "the gunman police killed" vs the reference: LCS "the gunman" (2): P 2/4, R 2/4
    assert gm.rouge_l("the gunman police killed", "police kill the gunman") == pytest.approx(0.5)


def test_the_bit_parallel_lcs_equals_the_textbook_dynamic_programme():
    def textbook(a, b):
        table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
        for i, x in enumerate(a):
            for j, y in enumerate(b):
                table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
        return table[-1][-1]

    rng = random.Random(7)
    for _ in range(400):
        a = rng.choices("abcde", k=rng.randint(0, 40))
        b = rng.choices("abcde", k=rng.randint(0, 70))
        assert gm.lcs_length(a, b) == textbook(a, b)


def test_chrf_equals_sacrebleus_sentence_chrf():
    rng = random.Random(3)
    words = ["contract", "the", "Supplier", "shall", "pay", "30", "days", "naïve", "Ünïcode", "€", "—", "a"]
    references = [" ".join(rng.choices(words, k=rng.randint(0, 25))) for _ in range(300)]
    predictions = [
        reference if rng.random() < 0.2 else " ".join(rng.choices(words, k=rng.randint(0, 25)))
        for reference in references
    ]
    predictions[:4] = ["", "   ", "x", "abc"]
    references[:4] = ["", "abc", "x", "   "]
    ours = gm.chrf_scores(predictions, references)
    library = CHRF()
    theirs = np.array([library.sentence_score(p, [r]).score / 100 for p, r in zip(predictions, references)])
    assert np.allclose(ours, theirs, atol=1e-12)
    assert gm.chrf("the cat", "the cat") == 1.0


def test_json_valid_checks_the_schema():
    schema = {"type": "object", "properties": {"label": {"enum": ["pay", "law"]}}, "required": ["label"]}
    assert gm.json_valid('{"label": "pay"}', schema) == 1.0
    assert gm.json_valid('```json\n{"label": "law"}\n```', schema) == 1.0
    assert gm.json_valid('{"label": "other"}', schema) == 0.0
    assert gm.json_valid("label: pay", schema) == 0.0


def test_scores_are_per_example_and_in_the_unit_interval():
    scores = gm.score_answers(
        {"base": ["Paris", "blue sky", ""], "tuned": ["paris.", "the sky is blue", "42"]},
        ["Paris", "the sky is blue", "42"],
        schema={"type": "string"},
    )
    assert scores["tuned"]["exact_match"].tolist() == [1.0, 1.0, 1.0]
    assert scores["base"]["exact_match"].tolist() == [1.0, 0.0, 0.0]
    assert scores["tuned"]["json_valid"].tolist() == [0.0, 0.0, 0.0]  # "42" is JSON, but a number, not a string
    for metrics in scores.values():
        assert set(metrics) == {*gm.GENERATION_METRICS, gm.JSON_METRIC}
        for values in metrics.values():
            assert len(values) == 3 and np.all((values >= 0) & (values <= 1))


def test_the_paired_bootstrap_interval_covers_the_mean_difference_and_is_reproducible():
    rng = np.random.default_rng(0)
    differences = {"exact_match": rng.choice([-1.0, 0.0, 1.0], size=400, p=[0.1, 0.6, 0.3])}
    first = gm.paired_bootstrap_means(differences)
    assert first == gm.paired_bootstrap_means(differences)
    interval = first["exact_match"]
    assert interval["ci_low"] < interval["delta"] < interval["ci_high"]
    assert interval["delta"] == pytest.approx(differences["exact_match"].mean(), abs=1e-6)
    # Normal approximation: the 95 % interval is about ±1.96 standard errors wide.
    se = differences["exact_match"].std(ddof=1) / np.sqrt(400)
    assert interval["ci_high"] - interval["ci_low"] == pytest.approx(2 * 1.96 * se, rel=0.12)


def test_the_minimum_detectable_effect_follows_the_power_formula():
    differences = np.array([1.0, -1.0] * 25)  # sd 1.0101, n 50
    mde = gm.minimum_detectable_effect(differences)
    assert mde["mde"] == pytest.approx((1.959964 + 0.841621) * np.std(differences, ddof=1) / np.sqrt(50), abs=1e-5)
    tied = gm.minimum_detectable_effect(np.zeros(50))
    assert tied["sd_assumed"] and tied["mde"] > 0


def test_a_not_significant_verdict_says_how_small_a_difference_the_test_set_can_tell():
    base = {"exact_match": np.array([1.0, 0.0] * 25)}
    tuned = {"exact_match": np.array([0.0, 1.0] * 25)}
    comparison = gm.compare_scores(base, tuned)["exact_match"]
    assert comparison["verdict"] == "not significant"
    assert "with 50 examples a difference smaller than" in comparison["summary"]
    better = gm.compare_scores({"exact_match": np.zeros(50)}, {"exact_match": np.ones(50)})["exact_match"]
    assert better["verdict"] == "significant improvement" and better["delta"] == 1.0


def test_the_p_value_is_a_paired_t_tests_against_the_reference_library():
    from scipy.stats import ttest_rel

    rng = np.random.default_rng(7)
    base, tuned = rng.random(40), rng.random(40) + 0.1
    comparison = gm.compare_scores({"token_f1": base}, {"token_f1": tuned})["token_f1"]
    assert comparison["p_value"] == pytest.approx(ttest_rel(tuned, base).pvalue, abs=1e-6)
    # Every pair moved alike: no spread to test, the answer is certain either way.
    assert gm.paired_p_value(np.ones(30))["p_value"] == 0.0
    assert gm.paired_p_value(np.zeros(30))["p_value"] == 1.0
    assert gm.paired_p_value(np.ones(1))["p_value"] is None


def test_a_judge_that_prefers_position_a_regardless_gives_only_ties():
    outcomes = [gm.judged_pair("A", "A") for _ in range(30)]
    summary = gm.judge_summary(outcomes)
    assert (summary["wins"], summary["losses"], summary["ties"]) == (0, 0, 30)
    assert summary["win_rate"] is None and summary["p_value"] == 1.0


def test_a_win_counts_only_when_both_orders_agree():
    assert gm.judged_pair("B", "A") == "fine_tuned"  # B = fine-tuned first, A = fine-tuned second
    assert gm.judged_pair("A", "B") == "base"
    assert gm.judged_pair("B", "B") == "tie" and gm.judged_pair("tie", "A") == "tie"


def test_an_order_whose_answer_named_no_winner_makes_the_pair_a_tie():
    assert gm.judged_pair("none", "A") == "tie" and gm.judged_pair("B", "none") == "tie"
    assert gm.judged_pair("none", "none") == "tie"


def test_the_judge_summary_has_a_wilson_interval_and_a_sign_test():
    summary = gm.judge_summary(["fine_tuned"] * 9 + ["base"] + ["tie"] * 5)
    assert (summary["wins"], summary["losses"], summary["ties"]) == (9, 1, 5)
    assert summary["win_rate"] == 0.9
    assert summary["win_rate_ci"] == pytest.approx([0.59585, 0.982123], abs=1e-5)
    assert summary["p_value"] == pytest.approx(0.021484, abs=1e-6)  # two-sided binomial, 9 of 10


def test_the_metrics_a_gate_or_a_sweep_may_name_are_those_the_comparisons_report():
    from finetune_studio.records import COMPARABLE_METRICS, METRICS_BY_TASK
    from models_app.models import PromotionGate

    assert METRICS_BY_TASK["generation"] == gm.GENERATION_METRICS
    assert tuple(PromotionGate.Metric.values) == COMPARABLE_METRICS
