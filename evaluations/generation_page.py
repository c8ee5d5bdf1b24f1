"""What the evaluation page shows for a generation evaluation: metric cards, filtered examples, word diffs.

Filters are a query parameter (``?show=improved``), so every filter is a plain link that works without
JavaScript; the examples come from ``Evaluation.examples`` (largest changes first, see generation.side_by_side).
"""

from __future__ import annotations

import difflib
import re

from .generation_metrics import GENERATION_METRICS, JSON_METRIC
from .judge import named_no_winner

METRIC_LABELS = {
    "exact_match": "Exact match",
    "token_f1": "Token F1",
    "rouge_l": "ROUGE-L",
    "chrf": "chrF",
    JSON_METRIC: "Valid JSON",
}
FILTERS = {
    "all": "All",
    "improved": "Improved",
    "regressed": "Regressed",
    "tied": "Tied",
    "judge_disagreed": "Judge disagreed with the metrics",
    "judge_no_verdict": "Judge named no winner",
}
# Listed only when some example matches (or it is the one shown): most judges always name a winner.
FILTERS_SHOWN_WHEN_USED = {"judge_no_verdict"}
EXAMPLES_PER_PAGE = 100
_WORD = re.compile(r"\S+")


def word_diff(reference: str, answer: str) -> list[dict]:
    """The answer's words against the reference's: ``same``, ``extra`` (only in the answer), ``missing``."""
    ref_words, answer_words = _WORD.findall(reference or ""), _WORD.findall(answer or "")
    matcher = difflib.SequenceMatcher(None, [w.casefold() for w in ref_words], [w.casefold() for w in answer_words])
    parts: list[dict] = []
    for op, ref_start, ref_end, ans_start, ans_end in matcher.get_opcodes():
        if op == "equal":
            parts.append({"kind": "same", "text": " ".join(answer_words[ans_start:ans_end])})
            continue
        if ref_end > ref_start:
            parts.append({"kind": "missing", "text": " ".join(ref_words[ref_start:ref_end])})
        if ans_end > ans_start:
            parts.append({"kind": "extra", "text": " ".join(answer_words[ans_start:ans_end])})
    return parts


def metric_cards(results: dict) -> list[dict]:
    cards = []
    for metric in results.get("metrics") or GENERATION_METRICS:
        comparison = results["comparisons"][metric]
        delta = comparison["delta"]
        direction = "flat" if abs(delta) < 1e-9 else ("up" if delta > 0 else "down")
        mde = comparison.get("minimum_detectable_effect") or {}
        cards.append(
            {
                "key": metric,
                "label": METRIC_LABELS.get(metric, metric),
                "base": results["base"][metric],
                "fine_tuned": results["fine_tuned"][metric],
                "delta": delta,
                "ci_low": comparison["ci_low"],
                "ci_high": comparison["ci_high"],
                "verdict": comparison["verdict"],
                "mde": mde.get("mde"),
                "summary": comparison["summary"],
                "direction": direction,
                "arrow": {"flat": "→", "up": "▲", "down": "▼"}[direction],
            }
        )
    return cards


def judge_card(judge: dict | None) -> dict | None:
    """The judge's summary with what the page says about answers that named no winner.

    ``no_verdict`` pairs are among the ties; when every pair is one, the judge gave no usable verdict at all
    (rather than finding every pair equal). Results from before these counts existed show none.
    """
    if not judge:
        return judge
    pairs = judge.get("pairs", judge["wins"] + judge["losses"] + judge["ties"])
    no_verdict = judge.get("no_verdict", 0)
    return {
        **judge,
        "no_verdict": no_verdict,
        "no_verdict_answers": judge.get("no_verdict_answers", 0),
        "answers": 2 * pairs,
        "no_usable_verdict": pairs > 0 and no_verdict == pairs,
    }


def _matches(example: dict, show: str) -> bool:
    if show == "judge_disagreed":
        return bool(example.get("judge_disagrees"))
    if show == "judge_no_verdict":
        return named_no_winner(example.get("judge") or {})
    return show == "all" or example["outcome"] == show


def page_context(evaluation, results: dict, show: str) -> dict:
    show = show if show in FILTERS else "all"
    examples = evaluation.examples or []
    counts = {name: sum(1 for example in examples if _matches(example, name)) for name in FILTERS}
    shown = []
    for example in (example for example in examples if _matches(example, show)):
        shown.append(
            {
                **example,
                "judge_no_verdict": named_no_winner(example.get("judge") or {}),
                "base_diff": word_diff(example["reference"], example["base_answer"]),
                "fine_tuned_diff": word_diff(example["reference"], example["fine_tuned_answer"]),
            }
        )
        if len(shown) >= EXAMPLES_PER_PAGE:
            break
    return {
        "generation": True,
        "metric_cards": metric_cards(results),
        "significance": results.get("significance", {}),
        "judge": judge_card(results.get("judge")),
        "filters": [
            {"key": key, "label": label, "count": counts[key]}
            for key, label in FILTERS.items()
            if key not in FILTERS_SHOWN_WHEN_USED or counts[key] or key == show
        ],
        "show": show,
        "examples": shown,
        "examples_total": len(examples),
        "candidate_scores": list(
            (results.get("candidates") or {"b": results["base"], "f": results["fine_tuned"]}).values()
        ),
        "metric_names": results.get("metrics") or list(GENERATION_METRICS),
    }
