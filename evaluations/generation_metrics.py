"""Scores of generated answers against references, their paired comparison, and pairwise judgements.

No Django. Every per-example score lies in [0, 1]:

- ``exact_match``: equal after normalising case, whitespace and punctuation; against a reference that is
  tool calls (``finetune_studio.records.tool_calls_text``: ``[{"arguments": {…}, "name": …}]``), the same
  calls instead: the same functions with equal arguments (``same_calls``), never after normalising, which
  would make ``"Paris"`` equal ``"paris"`` and ``1`` equal ``"1"``;
- ``token_f1``: the harmonic mean of token precision and recall (bags of normalised tokens, SQuAD style);
- ``rouge_l``: the F-measure of the longest common subsequence of normalised tokens;
- ``chrf``: chrF (character 1–6-grams, whitespace removed, beta 2) as sacrebleu defines it, divided by 100;
  computed for a whole test set at once (hashed n-grams in numpy): sacrebleu's own sentence loop takes
  about a millisecond a pair, 10 s for 10,000 examples × 2 candidates; the tests check equality with it;
- ``json_valid``: the answer parses as JSON and matches the request's JSON schema.

Comparisons resample examples (pairs kept) for a 95 % percentile interval of each metric's mean difference,
and state the minimum detectable effect at 80 % power for the test set's size and observed spread. Pairwise
judgements asked in both orders count a win only when both orders agree.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
from scipy.stats import binomtest, norm, t

# The same names as finetune_studio.records.METRICS_BY_TASK["generation"] (a test holds them equal): the engine
# imports no Django, and importing the core package starts Celery's app.
GENERATION_METRICS = ("exact_match", "token_f1", "rouge_l", "chrf")
JSON_METRIC = "json_valid"
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 20240601
CHRF_ORDER = 6
CHRF_BETA = 2.0
POWER = 0.8
ALPHA = 0.05

_NOT_WORD = re.compile(r"[\W_]+")  # punctuation, symbols and whitespace in any script


def _r(value: float) -> float:
    return round(float(value), 6)


# --- Per-example scores --------------------------------------------------------------------------------


def normalize(text: str) -> str:
    """Lower case, punctuation and symbols turned into spaces, whitespace collapsed."""
    return " ".join(_NOT_WORD.sub(" ", text.casefold()).split())


def exact_match(prediction: str, reference: str) -> float:
    reference_calls = calls_of(reference)
    if reference_calls is not None:
        return float(same_calls(prediction, reference_calls))
    return float(normalize(prediction) == normalize(reference))


# --- Tool calls --------------------------------------------------------------------------------------
# What a canonical calls text (records.tool_calls_text: keys sorted) starts with; a quick test before parsing.
_CALLS_PREFIX = '[{"arguments": '


def calls_of(text: str) -> list[tuple[str, str]] | None:
    """The calls a canonical tool-calls text lists, as (name, arguments key) pairs; None when it is not one.

    The arguments key is their JSON with keys sorted and whole-number floats written as integers (``1.0`` and
    ``1`` are the same JSON number); strings, booleans and types are compared as they are. Arguments a model
    wrote as text that is not a JSON object stay text, so they equal no reference's object.
    """
    if not text.startswith(_CALLS_PREFIX):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, list) or not value:
        return None
    calls = []
    for call in value:
        if not isinstance(call, dict) or set(call) != {"arguments", "name"} or not isinstance(call["name"], str):
            return None
        calls.append((call["name"], json.dumps(_same_numbers(call["arguments"]), sort_keys=True, ensure_ascii=False)))
    return calls


def same_calls(prediction: str, reference_calls: list[tuple[str, str]]) -> bool:
    """Whether the prediction makes the reference's calls: the same functions with equal arguments, each as
    often, in any order (calls of one turn are made together; their order says nothing)."""
    predicted = calls_of(prediction)
    return predicted is not None and sorted(predicted) == sorted(reference_calls)


def _same_numbers(value):
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _same_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_same_numbers(item) for item in value]
    return value


def comparable(text: str) -> str:
    """What two answers must share to be "the same answer": the calls (as ``same_calls`` compares them) when
    the text is tool calls, else the normalised text."""
    calls = calls_of(text)
    return "calls:" + json.dumps(sorted(calls)) if calls is not None else normalize(text)


def token_f1(prediction: str, reference: str) -> float:
    return _token_f1(normalize(prediction).split(), normalize(reference).split())


def _token_f1(predicted: list[str], expected: list[str]) -> float:
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def rouge_l(prediction: str, reference: str) -> float:
    return _rouge_l(normalize(prediction).split(), normalize(reference).split())


def _rouge_l(predicted: list[str], expected: list[str]) -> float:
    if not predicted or not expected:
        return float(predicted == expected)
    lcs = lcs_length(predicted, expected)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(predicted), lcs / len(expected)
    return 2 * precision * recall / (precision + recall)


def lcs_length(a: Sequence, b: Sequence) -> int:
    """Length of the longest common subsequence, bit-parallel (Hyyrö 2004): one big-integer step per item of a."""
    if not a or not b:
        return 0
    positions: dict = {}
    for index, item in enumerate(b):
        positions[item] = positions.get(item, 0) | (1 << index)
    full = (1 << len(b)) - 1
    row = full
    for item in a:
        matches = positions.get(item)
        if matches:
            kept = row & matches
            row = ((row + kept) | (row - kept)) & full
    return len(b) - row.bit_count()


def json_valid(prediction: str, schema: dict | None) -> float:
    """1.0 when the answer is JSON (inside a ``` fence or not) matching ``schema``."""
    return _json_checker(schema)(prediction)


def _json_checker(schema: dict | None):
    """One compiled validator for a whole test set (building one per answer cost seconds per 10,000)."""
    import jsonschema

    validator = jsonschema.validators.validator_for(schema or {})(schema or {})

    def check(prediction: str) -> float:
        text = prediction.strip()
        if text.startswith("```"):
            text = text.strip("`").removeprefix("json").strip()
        try:
            value = json.loads(text)
        except ValueError:
            return 0.0
        return float(validator.is_valid(value))

    return check


# --- chrF over a whole test set -----------------------------------------------------------------------


def _mix(values: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every bit of the key depends on every bit of the rolling hash."""
    values = values ^ (values >> np.uint64(30))
    values = values * np.uint64(0xBF58476D1CE4E5B9)
    values = values ^ (values >> np.uint64(27))
    values = values * np.uint64(0x94D049BB133111EB)
    return values ^ (values >> np.uint64(31))


class _CharGrams:
    """Character n-grams (1..CHRF_ORDER) of one text per example, as keys ``(example << 40) | hash``."""

    def __init__(self, texts: Sequence[str]):
        stripped = ["".join(text.split()) for text in texts]
        lengths = np.fromiter((len(text) for text in stripped), dtype=np.int64, count=len(stripped))
        codes = np.frombuffer("".join(stripped).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
        examples = np.repeat(np.arange(len(stripped), dtype=np.uint64), lengths)
        starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
        remaining = np.repeat(lengths, lengths) - (np.arange(len(codes)) - starts)  # chars from here to the end
        self.examples = len(stripped)
        # Per order: (n-grams per example, distinct keys, their counts).
        self.orders: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        rolling = np.zeros(len(codes), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for n in range(1, CHRF_ORDER + 1):
                width = max(len(codes) - n + 1, 0)
                rolling = rolling[:width] * np.uint64(1_000_003) + codes[n - 1 :] + np.uint64(1)
                valid = remaining[:width] >= n
                owner = examples[:width][valid]
                keys = (owner << np.uint64(40)) | (_mix(rolling[valid]) >> np.uint64(24))
                distinct, counts = np.unique(keys, return_counts=True)
                totals = np.bincount(owner.astype(np.int64), minlength=self.examples).astype(float)
                self.orders.append((totals, distinct, counts))

    def matches(self, other: _CharGrams) -> list[np.ndarray]:
        """Per order, each example's clipped n-gram matches between this text and the other."""
        found = []
        for (_, mine, my_counts), (_, theirs, their_counts) in zip(self.orders, other.orders, strict=True):
            common, mine_at, theirs_at = np.intersect1d(mine, theirs, assume_unique=True, return_indices=True)
            clipped = np.minimum(my_counts[mine_at], their_counts[theirs_at]).astype(float)
            owners = (common >> np.uint64(40)).astype(np.int64)
            found.append(np.bincount(owners, weights=clipped, minlength=self.examples))
        return found


def chrf_scores(predictions: Sequence[str], references: Sequence[str], *, _references=None) -> np.ndarray:
    """chrF of each (prediction, reference) pair in [0, 1]; sacrebleu's sentence_score / 100."""
    if len(predictions) != len(references):
        raise ValueError("one reference per prediction")
    reference_grams = _references or _CharGrams(references)
    prediction_grams = _CharGrams(predictions)
    matches = prediction_grams.matches(reference_grams)
    precision_sum = np.zeros(len(predictions))
    recall_sum = np.zeros(len(predictions))
    effective = np.zeros(len(predictions))
    for (hyp_total, _, _), (ref_total, _, _), matched in zip(
        prediction_grams.orders, reference_grams.orders, matches, strict=True
    ):
        both = (hyp_total > 0) & (ref_total > 0)
        precision_sum += np.where(both, matched / np.maximum(hyp_total, 1), 0.0)
        recall_sum += np.where(both, matched / np.maximum(ref_total, 1), 0.0)
        effective += both
    precision = np.divide(precision_sum, effective, out=np.zeros_like(precision_sum), where=effective > 0)
    recall = np.divide(recall_sum, effective, out=np.zeros_like(recall_sum), where=effective > 0)
    factor = CHRF_BETA**2
    denominator = factor * precision + recall
    return np.divide(
        (1 + factor) * precision * recall, denominator, out=np.zeros_like(precision), where=denominator > 0
    )


def chrf(prediction: str, reference: str) -> float:
    return float(chrf_scores([prediction], [reference])[0])


# --- A candidate's scores ----------------------------------------------------------------------------


def score_answers(answers: dict[str, Sequence[str]], references: Sequence[str], *, schema: dict | None = None):
    """Per candidate, per metric, the per-example scores (numpy arrays, one value per reference)."""
    reference_tokens = [normalize(reference).split() for reference in references]
    reference_calls = [calls_of(reference) for reference in references]
    reference_grams = _CharGrams(references)
    check_json = _json_checker(schema) if schema is not None else None
    scored = {}
    for name, texts in answers.items():
        if len(texts) != len(references):
            raise ValueError(f"{name}: one answer per reference")
        tokens = [normalize(text).split() for text in texts]
        metrics = {
            "exact_match": np.array(
                [
                    float(a == b if calls is None else same_calls(text, calls))
                    for text, a, b, calls in zip(texts, tokens, reference_tokens, reference_calls, strict=True)
                ]
            ),
            "token_f1": np.array([_token_f1(a, b) for a, b in zip(tokens, reference_tokens, strict=True)]),
            "rouge_l": np.array([_rouge_l(a, b) for a, b in zip(tokens, reference_tokens, strict=True)]),
            "chrf": chrf_scores(texts, references, _references=reference_grams),
        }
        if schema is not None:
            metrics[JSON_METRIC] = np.array([check_json(text) for text in texts])
        scored[name] = metrics
    return scored


# --- Paired comparison --------------------------------------------------------------------------------


def paired_bootstrap_means(
    differences: dict[str, np.ndarray], *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> dict[str, dict]:
    """95 % percentile interval of each metric's mean difference, one shared resampling of the examples."""
    names = list(differences)
    matrix = np.vstack([differences[name] for name in names])  # metrics × examples
    n = matrix.shape[1]
    if n == 0:
        raise ValueError("no examples to compare")
    rng = np.random.default_rng(seed)
    means = np.empty((resamples, len(names)))
    block = max(1, min(resamples, 2_000_000 // n))
    for start in range(0, resamples, block):
        size = min(block, resamples - start)
        drawn = rng.integers(0, n, size=(size, n)) + (np.arange(size) * n)[:, None]
        weights = np.bincount(drawn.ravel(), minlength=size * n).reshape(size, n)
        means[start : start + size] = weights @ matrix.T / n
    low, high = np.percentile(means, [2.5, 97.5], axis=0)
    return {
        name: {"delta": _r(matrix[i].mean()), "ci_low": _r(low[i]), "ci_high": _r(high[i])}
        for i, name in enumerate(names)
    }


def minimum_detectable_effect(differences: np.ndarray, *, alpha: float = ALPHA, power: float = POWER) -> dict:
    """The smallest true mean difference a two-sided paired test at ``alpha`` detects with ``power``.

    ``(z(1 − α/2) + z(power)) · sd(d) / √n`` with the observed spread of the per-example differences. With no
    spread at all (every pair scored alike) one discordant pair's spread stands in, so a perfect tie on 50
    examples still reads "smaller than X cannot be told apart" instead of 0.
    """
    n = len(differences)
    if n < 2:
        return {"mde": None, "power": power, "alpha": alpha, "n": n, "sd": None}
    sd = float(np.std(differences, ddof=1))
    assumed = sd == 0.0
    if assumed:
        sd = math.sqrt(1.0 / n)
    z = norm.ppf(1 - alpha / 2) + norm.ppf(power)
    return {
        "mde": _r(z * sd / math.sqrt(n)),
        "power": power,
        "alpha": alpha,
        "n": n,
        "sd": _r(sd),
        "sd_assumed": assumed,
    }


def paired_p_value(differences: np.ndarray) -> dict:
    """Two-sided paired t-test of the mean per-example difference against 0 (what ranks a sweep's trials and
    is Holm-adjusted there, as McNemar's p is for classification).

    With no spread at all every pair moved by the same amount: p is 0 when that amount is not 0, else 1.
    """
    n = len(differences)
    if n < 2:
        return {"p_value": None, "test": "paired t-test", "n": n}
    mean = float(np.mean(differences))
    sd = float(np.std(differences, ddof=1))
    if sd == 0.0:
        p_value = 1.0 if mean == 0.0 else 0.0
    else:
        statistic = mean / (sd / math.sqrt(n))
        p_value = float(2 * t.sf(abs(statistic), df=n - 1))
    return {"p_value": _r(p_value), "test": "paired t-test", "n": n}


def verdict_for(ci_low: float, ci_high: float) -> str:
    """The verdict of a 95 % interval of a difference: the words every comparison (classification too) uses."""
    if ci_low > 0:
        return "significant improvement"
    if ci_high < 0:
        return "significant regression"
    return "not significant"


def verdict_words(metric: str, interval: dict, mde: dict) -> str:
    """Plain words for one metric's comparison."""
    label = metric.replace("_", " ")
    delta, low, high = interval["delta"], interval["ci_low"], interval["ci_high"]
    span = f"{100 * delta:+.1f} points (95 % CI {100 * low:+.1f} to {100 * high:+.1f})"
    if low > 0:
        return f"{label}: significant improvement, {span}"
    if high < 0:
        return f"{label}: significant regression, {span}"
    smallest = mde.get("mde")
    if smallest is None:
        return f"{label}: not significant, {span}"
    return (
        f"{label}: not significant, {span}; with {mde['n']} examples a difference smaller than "
        f"{100 * smallest:.1f} points cannot be told apart (80 % power)"
    )


def compare_scores(base: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> dict:
    """Improvement per metric (other − base), its interval, a paired t-test's p, the minimum detectable effect and
    the verdicts (read from the interval)."""
    differences = {metric: other[metric] - base[metric] for metric in base}
    intervals = paired_bootstrap_means(differences)
    comparison = {}
    for metric, interval in intervals.items():
        mde = minimum_detectable_effect(differences[metric])
        verdict = verdict_for(interval["ci_low"], interval["ci_high"])
        comparison[metric] = {
            **interval,
            "verdict": verdict,
            "p_value": paired_p_value(differences[metric])["p_value"],
            "minimum_detectable_effect": mde,
            "summary": verdict_words(metric, interval, mde),
        }
    return comparison


def candidate_summary(name: str, scores: dict[str, np.ndarray]) -> dict:
    return {
        "model": name,
        "examples": int(len(next(iter(scores.values())))),
        **{metric: _r(values.mean()) for metric, values in scores.items()},
    }


# --- Pairwise judgements --------------------------------------------------------------------------------


def judged_pair(base_first: str, fine_tuned_first: str) -> str:
    """One pair asked in both orders → "fine_tuned", "base" or "tie".

    ``base_first`` is the judge's verdict ("A", "B", "tie", or "none" when its answer named no winner) with the
    base's answer as A; ``fine_tuned_first`` with the fine-tuned answer as A. A win needs both orders to agree;
    a judge that prefers a position regardless of the answers therefore produces ties, never wins, and so does
    one that named no winner in either order ("none" agrees with nothing). ``judge.run`` counts the latter
    apart (``no_verdict``), so such a tie is not read as the judge finding the answers equal.
    """
    first = {"A": "base", "B": "fine_tuned"}.get(base_first, "tie")
    second = {"A": "fine_tuned", "B": "base"}.get(fine_tuned_first, "tie")
    return first if first == second else "tie"


def wilson_interval(successes: int, trials: int, *, z: float = 1.959964) -> tuple[float, float]:
    if trials == 0:
        return (0.0, 1.0)
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return (_r(max(0.0, centre - half)), _r(min(1.0, centre + half)))


def judge_summary(outcomes: Sequence[str]) -> dict:
    """Wins, losses and ties of the fine-tuned candidate; the win rate over decided pairs with its Wilson CI."""
    wins = sum(1 for outcome in outcomes if outcome == "fine_tuned")
    losses = sum(1 for outcome in outcomes if outcome == "base")
    ties = len(outcomes) - wins - losses
    decided = wins + losses
    p_value = 1.0 if decided == 0 else float(binomtest(wins, decided, 0.5).pvalue)
    return {
        "wins": wins,
        "losses": losses,
        "ties": ties,
        "win_rate": _r(wins / decided) if decided else None,
        "win_rate_ci": list(wilson_interval(wins, decided)),
        "p_value": _r(p_value),
        "pairs": len(outcomes),
    }
