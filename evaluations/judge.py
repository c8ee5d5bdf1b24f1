"""LLM-as-judge, pairwise: a judge model compares the base's and the fine-tuned answer to each question.

Each pair is asked in both orders (the base's answer as A, then as B) and counts as a win only when both
orders agree (``generation_metrics.judged_pair``), so a judge that prefers a position regardless produces
ties. An answer that names no winner (prose, broken JSON: a judge model that cannot follow the verdict
format) is kept apart as ``NO_VERDICT``: its pair is a tie, and the summary counts such pairs and answers,
so a judge that never answered is not read as one that found the answers equal.

Judge answers are cached by (endpoint, model, the full prompt sent): a re-run, or a second evaluation with
the same answers, asks nothing it asked before. No Django at import time; the database cache imports its
model when used.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from inference.base import Backend, ChatOptions, ChatRequest

from . import generation_metrics as gm

DEFAULT_JUDGE_PROMPT = (
    "You are judging two answers to the same request. Decide which answer is better: more correct, more "
    "helpful and closer to the reference answer when one is given. Ignore the order in which the answers are "
    "shown and their length.\n\n"
    "Request:\n{question}\n\n"
    "{reference_block}"
    "Answer A:\n{answer_a}\n\n"
    "Answer B:\n{answer_b}\n\n"
    'Reply with JSON only: {"winner": "A" or "B" or "tie", "reason": "<one short sentence>"}'
)
REFERENCE_BLOCK = "Reference answer:\n{reference}\n\n"
REQUIRED_PLACEHOLDERS = ("{answer_a}", "{answer_b}")
MAX_PROMPT_CHARS = 20_000
VERDICT_SCHEMA = {
    "type": "object",
    "properties": {"winner": {"type": "string", "enum": ["A", "B", "tie"]}, "reason": {"type": "string"}},
    "required": ["winner", "reason"],
}
BASE_FIRST, FINE_TUNED_FIRST = "base_first", "fine_tuned_first"
NO_VERDICT = "none"  # the judge's answer named no winner (not a "tie" the judge chose)
NO_VERDICT_REASON = "the judge's answer named no winner"


def check_prompt(template) -> str | None:
    """Why a judge prompt cannot be used, or None."""
    if not isinstance(template, str) or not template.strip():
        return "must be a non-empty string"
    if len(template) > MAX_PROMPT_CHARS:
        return f"is longer than {MAX_PROMPT_CHARS} characters"
    missing = [p for p in REQUIRED_PLACEHOLDERS if p not in template]
    if missing:
        return f"must contain {' and '.join(missing)} where the two answers go"
    # Every placeholder repeats a whole answer or question: a prompt of thousands would be megabytes per pair.
    if len(_PLACEHOLDER.findall(template)) > MAX_PLACEHOLDERS:
        return f"may use at most {MAX_PLACEHOLDERS} placeholders"
    return None


_PLACEHOLDER = re.compile(r"\{(question|reference_block|reference|answer_a|answer_b)\}")
MAX_PLACEHOLDERS = 10


def fill_prompt(template: str, *, question: str, reference: str, answer_a: str, answer_b: str) -> str:
    # One pass over the template, so an answer that itself contains "{answer_b}" is never expanded.
    values = {
        "question": question,
        "reference": reference,
        "reference_block": REFERENCE_BLOCK.replace("{reference}", reference) if reference else "",
        "answer_a": answer_a,
        "answer_b": answer_b,
    }
    return _PLACEHOLDER.sub(lambda m: values[m[1]], template)


def parse_verdict(content: str) -> tuple[str, str]:
    """("A" | "B" | "tie" | NO_VERDICT, reason). An answer that names no winner is NO_VERDICT, and the reason
    says so and quotes the start of the answer."""
    text = (content or "").strip()
    candidates = [text, *re.findall(r"\{[^{}]*\}", text, re.DOTALL)]
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            winner = str(value.get("winner", "")).strip()
            reason = str(value.get("reason", "")).strip()[:2000]
            normal = {"a": "A", "b": "B", "tie": "tie"}.get(winner.lower())
            if normal:
                return normal, reason
    return NO_VERDICT, f"{NO_VERDICT_REASON}: {text[:200]!r}"


def named_no_winner(verdicts: dict) -> bool:
    """Whether either order of one example's judged pair (``run``'s ``examples[index]``) named no winner."""
    return any((verdicts.get(order) or {}).get("winner") == NO_VERDICT for order in (BASE_FIRST, FINE_TUNED_FIRST))


def cache_key(*, endpoint: str, model: str, prompt: str) -> str:
    return hashlib.sha256(json.dumps([endpoint, model, prompt]).encode()).hexdigest()


@dataclass(frozen=True)
class Verdict:
    winner: str
    reason: str
    content: str = ""

    @classmethod
    def from_dict(cls, value: dict) -> Verdict:
        """A verdict as kept in a cache file; one from before NO_VERDICT (an unparsed answer kept as "tie",
        its reason saying it named no winner) reads as NO_VERDICT."""
        verdict = cls(**value)
        if verdict.winner == "tie" and verdict.reason.startswith(NO_VERDICT_REASON):
            return cls(NO_VERDICT, verdict.reason, verdict.content)
        return verdict


class JudgeCache(Protocol):
    def get_many(self, keys: Sequence[str]) -> dict[str, Verdict]: ...

    def put_many(self, verdicts: dict[str, Verdict], *, endpoint: str, model: str) -> None: ...


class MemoryJudgeCache:
    def __init__(self):
        self.verdicts: dict[str, Verdict] = {}

    def get_many(self, keys):
        return {key: self.verdicts[key] for key in keys if key in self.verdicts}

    def put_many(self, verdicts, *, endpoint, model):
        self.verdicts.update(verdicts)


class DatabaseJudgeCache:
    """The owner's cached judge answers (``evaluations.JudgeAnswer``)."""

    def __init__(self, owner_id: int):
        self.owner_id = owner_id

    def get_many(self, keys):
        from .models import JudgeAnswer

        rows = JudgeAnswer.objects.filter(owner_id=self.owner_id, key__in=list(keys))
        return {row.key: Verdict(row.winner, row.reason, row.content) for row in rows}

    def put_many(self, verdicts, *, endpoint, model):
        from .models import JudgeAnswer

        JudgeAnswer.objects.bulk_create(
            [
                JudgeAnswer(
                    owner_id=self.owner_id,
                    key=key,
                    endpoint=endpoint[:100],
                    judge_model=model[:200],
                    winner=verdict.winner,
                    reason=verdict.reason,
                    content=verdict.content,
                )
                for key, verdict in verdicts.items()
            ],
            ignore_conflicts=True,
        )


@dataclass(frozen=True)
class JudgePlan:
    endpoint: str
    model: str
    prompt: str = DEFAULT_JUDGE_PROMPT
    max_tokens: int = 256


def run(*, plan: JudgePlan, backend: Backend, cache: JudgeCache, pairs: Sequence[dict]) -> dict:
    """Judge every pair in both orders; ``pairs``: {index, question, reference, base_answer, fine_tuned_answer}.

    Returns {"summary": judge_summary + no_verdict/no_verdict_answers/requests/cache_hits/endpoint/model,
    "examples": {index: verdicts}}. ``no_verdict``: the pairs (all counted among the ties) where at least one
    of the two answers named no winner; ``no_verdict_answers``: such answers, out of 2 × pairs.
    Raises the first InferenceError of the judge's endpoint (nothing is cached from a failed answer).
    """
    prompts: dict[tuple[int, str], str] = {}
    for pair in pairs:
        common = {"question": pair["question"], "reference": pair.get("reference") or ""}
        prompts[(pair["index"], BASE_FIRST)] = fill_prompt(
            plan.prompt, **common, answer_a=pair["base_answer"], answer_b=pair["fine_tuned_answer"]
        )
        prompts[(pair["index"], FINE_TUNED_FIRST)] = fill_prompt(
            plan.prompt, **common, answer_a=pair["fine_tuned_answer"], answer_b=pair["base_answer"]
        )
    keys = {slot: cache_key(endpoint=plan.endpoint, model=plan.model, prompt=text) for slot, text in prompts.items()}
    cached = cache.get_many(sorted(set(keys.values())))
    asked_keys = sorted({key for key in keys.values() if key not in cached})
    prompt_of = {key: prompts[slot] for slot, key in keys.items()}
    options = ChatOptions(temperature=0.0, seed=gm.BOOTSTRAP_SEED, max_tokens=plan.max_tokens)
    requests = [
        ChatRequest.from_prompt(plan.model, prompt_of[key], options=options, schema=VERDICT_SCHEMA)
        for key in asked_keys
    ]
    fresh: dict[str, Verdict] = {}
    if requests:
        answers = backend.chat_many(requests)
        try:
            for outcome in answers:
                if outcome.error is not None:
                    raise outcome.error
                winner, reason = parse_verdict(outcome.answer.content)
                fresh[asked_keys[outcome.index]] = Verdict(winner, reason, outcome.answer.content[:5000])
        finally:
            answers.close()
            # What came back before a failure is kept: a retry pays only for the rest.
            cache.put_many(fresh, endpoint=plan.endpoint, model=plan.model)
    verdicts = {**cached, **fresh}
    examples: dict[int, dict] = {}
    outcomes = []
    no_verdict = no_verdict_answers = 0
    for pair in pairs:
        first = verdicts[keys[(pair["index"], BASE_FIRST)]]
        second = verdicts[keys[(pair["index"], FINE_TUNED_FIRST)]]
        outcome = gm.judged_pair(first.winner, second.winner)
        outcomes.append(outcome)
        unanswered = sum(1 for verdict in (first, second) if verdict.winner == NO_VERDICT)
        no_verdict_answers += unanswered
        no_verdict += 1 if unanswered else 0
        examples[pair["index"]] = {
            "outcome": outcome,
            "base_first": {"winner": first.winner, "reason": first.reason},
            "fine_tuned_first": {"winner": second.winner, "reason": second.reason},
        }
    slots = len(keys)
    hits = sum(1 for key in keys.values() if key in cached)
    summary = {
        **gm.judge_summary(outcomes),
        "no_verdict": no_verdict,
        "no_verdict_answers": no_verdict_answers,
        "endpoint": plan.endpoint,
        "model": plan.model,
        "requests": len(requests),
        "cache_hits": hits,
        "requests_per_example": round(len(requests) / len(pairs), 6) if pairs else 0.0,
        "cache_hit_rate": round(hits / slots, 6) if slots else None,
        "prompt_is_default": plan.prompt == DEFAULT_JUDGE_PROMPT,
    }
    return {"summary": summary, "examples": examples}


def pairs_from(predictions: Sequence, *, base: str, fine_tuned: str) -> list[dict]:
    """The judge's pairs from stored predictions (examples both candidates answered)."""
    by_candidate: dict[str, dict[int, object]] = {base: {}, fine_tuned: {}}
    for p in predictions:
        if p.candidate in by_candidate:
            by_candidate[p.candidate][p.index] = p
    pairs = []
    for index in sorted(set(by_candidate[base]) & set(by_candidate[fine_tuned])):
        b, o = by_candidate[base][index], by_candidate[fine_tuned][index]
        pairs.append(
            {
                "index": index,
                "question": b.input_text,
                "reference": b.expected,
                "base_answer": b.prediction_text,
                "fine_tuned_answer": o.prediction_text,
            }
        )
    return pairs
