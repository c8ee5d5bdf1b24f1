"""Generative evaluation: each candidate answers every test conversation, scored against its reference.

No Django at import time (the CLI and the Celery worker share it, like ``engine``). A test record is asked
as its conversation up to its last assistant turn (system and earlier turns kept); that turn is the
reference. Every answer is scored as it arrives (``generation_metrics``) and the scores travel with the
prediction, so results and any re-analysis read stored scores, never the endpoint again.

Tool calling: a record with ``tools`` is asked with them, its earlier turns as OpenAI's API has them (calls
and results included; each backend converts them to its own shape). When its last assistant turn calls
tools, the reference is those calls' canonical text (``records.tool_calls_text``), and an answer that calls
tools is written the same way (``answer_text``), so ``exact_match`` means the same functions with the same
arguments; an answer in plain text is scored as the text it is.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from inference.base import Answer, ChatOptions, ChatRequest
from inference.tool_calls import arguments_value

from . import generation_metrics as gm
from .engine import EvaluationConfig, EvaluationInputError, Prediction

if TYPE_CHECKING:
    from finetune_studio.records import ToolCall

CLASSIFICATION = "classification"
GENERATION = "generation"
TASKS = (CLASSIFICATION, GENERATION)
# The metric the headline verdict (and the examples' ordering) reads: token overlap, robust to phrasing;
# exact match when the test set's answers are mostly tool calls, where "the same calls" is the question and
# token overlap of the calls' JSON gives credit for its keys alone.
HEADLINE_METRIC = "token_f1"
DEFAULT_MAX_TOKENS = 512
EXAMPLES_KEPT = 500  # per evaluation in ``examples`` (the viewer); every prediction stays in the table
MAX_JSON_SCHEMA_BYTES = 20_000


def records_task(records: Sequence) -> str:
    """The test set's task from its records: ``classification`` only for text/label records."""
    if not records:
        return CLASSIFICATION
    return records[0].task if records[0].task in TASKS else CLASSIFICATION


def headline_metric(references: Sequence[str]) -> str:
    """The headline metric for these references: exact match when at least half of them are tool calls (the
    rule by which a gate or a sweep on that test set defaults to it, ``records.mostly_tool_calls``)."""
    # Imported here: importing the core starts Celery's app (Django).
    from finetune_studio.records import TOOL_CALLS_METRIC, mostly_tool_calls

    calls = sum(gm.calls_of(reference) is not None for reference in references)
    return TOOL_CALLS_METRIC if mostly_tool_calls(tool_call_answers=calls, records=len(references)) else HEADLINE_METRIC


def conversation_of(record) -> tuple[list[dict], str]:
    """(turns up to the last assistant turn, as OpenAI's chat API takes them; what that turn answers).

    The reference is the turn's ``answer``: its text, or its calls' canonical text when it calls tools.
    """
    turns = record.conversation()
    last = max((i for i, turn in enumerate(turns) if turn.role == "assistant"), default=None)
    if last is None:
        return [{"role": "user", "content": record.text}], record.label
    return [turn.openai_turn() for turn in turns[:last]], turns[last].answer


def question_of(record) -> str:
    """The user turn shown beside the answers (and given to a judge): the last one before the reference."""
    messages, _reference = conversation_of(record)
    users = [m["content"] for m in messages if m["role"] == "user"]
    return users[-1] if users else record.text


def answer_text(answer: Answer) -> str:
    """What an answer is scored as: its calls' canonical text when it called tools, else its content.

    Arguments the model wrote that are not a JSON object are kept as the text it wrote, so the calls are
    scored as wrong rather than repaired or dropped.
    """
    if not answer.tool_calls:
        return answer.content
    return calls_text(answer.tool_calls)


def calls_text(calls: Sequence[ToolCall]) -> str:
    """``records.tool_calls_text`` that keeps unreadable arguments (not a JSON object) as their text."""
    from finetune_studio.records import tool_calls_text  # here: importing the core starts Celery's app (Django)

    parsed = [(call, arguments_value(call.arguments)) for call in calls]
    return tool_calls_text(
        [(call.name, value if isinstance(value, dict) else call.arguments) for call, value in parsed]
    )


def prepare_examples(records: Sequence, config: EvaluationConfig) -> tuple[list, list[str]]:
    if not records:
        raise EvaluationInputError("the test set has no records")
    for number, record in enumerate(records, start=1):
        messages, reference = conversation_of(record)
        if not reference:
            raise EvaluationInputError(f"record {number}: no reference answer (an empty last assistant turn)")
        if not any(m["role"] == "user" for m in messages):
            raise EvaluationInputError(f"record {number}: no user turn before the reference answer")
    return list(records[: config.max_examples] if config.max_examples else records), []


def request_for(config: EvaluationConfig, schema: dict | None):
    """The engine's ``request_for``: the conversation, the schema when answers must match one."""
    options = ChatOptions(
        temperature=config.temperature, seed=config.seed, max_tokens=config.num_predict or DEFAULT_MAX_TOKENS
    )

    def build(record, *, model: str) -> ChatRequest:
        messages, _reference = conversation_of(record)
        return ChatRequest(
            model=model, messages=tuple(messages), options=options, schema=schema, tools=tuple(record.tools)
        )

    return build


def prediction_for(schema: dict | None):
    """The engine's ``prediction_for``: the answer against its reference (scored by ScoringStore, in batches)."""

    def keep(record, index: int, candidate: str, answer: Answer) -> Prediction:
        _messages, reference = conversation_of(record)
        return Prediction(
            index=index,
            candidate=candidate,
            expected=reference,
            input_text=question_of(record),
            prediction_text=answer_text(answer),
            parsed_label=None,
            latency_ms=round(answer.latency_ms, 3),
            eval_count=answer.completion_tokens,
            eval_duration_ns=answer.generation_ns,
        )

    return keep


class ScoringStore:
    """Wraps the run's store: each batch of answers is scored at once before it is saved with its scores.

    Scoring a batch together costs about a tenth of scoring answer by answer (bench/bench_judge.py), and
    the scores are stored in the same write as the answers, so no stored answer ever lacks them.
    """

    def __init__(self, store, schema: dict | None):
        self.store = store
        self.schema = schema

    def stored_keys(self):
        return self.store.stored_keys()

    def should_stop(self) -> bool:
        return self.store.should_stop()

    def save(self, predictions: list, *, done: int, total: int) -> None:
        if predictions:
            scored = gm.score_answers(
                {"batch": [p.prediction_text for p in predictions]},
                [p.expected for p in predictions],
                schema=self.schema,
            )["batch"]
            for position, prediction in enumerate(predictions):
                prediction.scores = {metric: gm._r(values[position]) for metric, values in scored.items()}
                prediction.correct = prediction.scores["exact_match"] == 1.0
        self.store.save(predictions, done=done, total=total)


def score_one(answer: str, reference: str, *, schema: dict | None) -> dict:
    scored = gm.score_answers({"answer": [answer]}, [reference], schema=schema)["answer"]
    return {metric: gm._r(values[0]) for metric, values in scored.items()}


def check_json_schema(schema) -> str | None:
    """Why a user's JSON schema cannot be used, or None."""
    import jsonschema

    if not isinstance(schema, dict):
        return "must be a JSON object (a JSON schema)"
    if len(json.dumps(schema)) > MAX_JSON_SCHEMA_BYTES:
        return f"is larger than {MAX_JSON_SCHEMA_BYTES} bytes"
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        return f"is not a valid JSON schema: {exc.message[:200]}"
    return None


# --- results ------------------------------------------------------------------------------------------
def _paired(predictions: Sequence, candidates: Sequence[str]) -> dict[str, list]:
    by_candidate: dict[str, dict[int, Prediction]] = {name: {} for name in candidates}
    for prediction in predictions:
        if prediction.candidate in by_candidate:
            by_candidate[prediction.candidate][prediction.index] = prediction
    common = sorted(set.intersection(*(set(found) for found in by_candidate.values())))
    return {name: [by_candidate[name][index] for index in common] for name in candidates}


def _score_arrays(predictions: list, metrics: Sequence[str]) -> dict[str, np.ndarray]:
    return {metric: np.array([float(p.scores.get(metric, 0.0)) for p in predictions]) for metric in metrics}


def metric_names(schema: dict | None) -> list[str]:
    return [*gm.GENERATION_METRICS, *([gm.JSON_METRIC] if schema is not None else [])]


def compute_results(
    predictions: Sequence, *, candidates: Sequence[str], schema: dict | None = None, judge: dict | None = None
) -> tuple[dict, list]:
    """(results, examples) from stored per-example scores; ``judge`` is ``judge.run``'s result when one ran."""
    if len(candidates) < 2:
        raise ValueError("an evaluation compares at least two candidates")
    paired = _paired(predictions, candidates)
    base_name, fine_tuned_name = candidates[0], candidates[1]
    if not paired[base_name]:
        raise ValueError("no example was answered by every candidate")
    metrics = metric_names(schema)
    arrays = {name: _score_arrays(paired[name], metrics) for name in candidates}
    summaries = {name: gm.candidate_summary(name, arrays[name]) for name in candidates}
    comparisons = {name: gm.compare_scores(arrays[base_name], arrays[name]) for name in candidates[1:]}
    headline_name = headline_metric([prediction.expected for prediction in paired[base_name]])
    headline = comparisons[fine_tuned_name][headline_name]
    results = {
        "task": GENERATION,
        "metrics": metrics,
        "headline_metric": headline_name,
        "examples_evaluated": len(paired[base_name]),
        "base": summaries[base_name],
        "fine_tuned": summaries[fine_tuned_name],
        "improvement": {metric: c["delta"] for metric, c in comparisons[fine_tuned_name].items()},
        "comparisons": comparisons[fine_tuned_name],
        "significance": {
            "verdict": headline["verdict"],
            "summary": "; ".join(c["summary"] for c in comparisons[fine_tuned_name].values()),
            "metric": headline_name,
        },
    }
    if len(candidates) > 2:
        results["candidates"] = summaries
        results["comparisons_by_candidate"] = comparisons
        results["best_fine_tuned"] = max(candidates[1:], key=lambda name: summaries[name][headline_name])
    judged = {}
    if judge is not None:
        results["judge"] = judge["summary"]
        judged = judge["examples"]
    examples = side_by_side(
        paired[base_name], paired[fine_tuned_name], metrics=metrics, judged=judged, headline=headline_name
    )
    return results, examples


def outcome_of(delta: float) -> str:
    return "improved" if delta > 0 else "regressed" if delta < 0 else "tied"


def side_by_side(
    base: list, other: list, *, metrics: Sequence[str], judged: dict, headline: str = HEADLINE_METRIC
) -> list[dict]:
    """Every example (up to EXAMPLES_KEPT), the largest improvements and the largest regressions first.

    Ordered by the size of the headline metric's change, so the top of the list holds both ends; the
    viewer's filters pick one side. ``judge_disagrees``: the judge picked the side the metrics scored lower.
    """
    rows = []
    for b, o in zip(base, other, strict=True):
        delta = gm._r(o.scores.get(headline, 0.0) - b.scores.get(headline, 0.0))
        outcome = outcome_of(delta)
        row = {
            "index": b.index,
            "input": b.input_text,
            "reference": b.expected,
            "base_answer": b.prediction_text,
            "fine_tuned_answer": o.prediction_text,
            "base_scores": {m: b.scores.get(m) for m in metrics},
            "fine_tuned_scores": {m: o.scores.get(m) for m in metrics},
            "delta": delta,
            "outcome": outcome,
        }
        verdict = judged.get(b.index) or judged.get(str(b.index))
        if verdict is not None:
            row["judge"] = verdict
            metric_side = {"improved": "fine_tuned", "regressed": "base"}.get(outcome, "tie")
            row["judge_disagrees"] = verdict["outcome"] != "tie" and verdict["outcome"] != metric_side
        rows.append(row)
    rows.sort(key=lambda row: (-abs(row["delta"]), row["index"]))
    return rows[:EXAMPLES_KEPT]


def summary_of(results: dict) -> dict:
    """The short form kept on the model (``eval_results``)."""
    metrics = results["metrics"]
    summary = {
        "task": GENERATION,
        "base": {m: results["base"][m] for m in metrics} | {"model": results["base"]["model"]},
        "fine_tuned": {m: results["fine_tuned"][m] for m in metrics} | {"model": results["fine_tuned"]["model"]},
        "improvement": dict(results["improvement"]),
        "verdict": results["significance"]["verdict"],
        "headline_metric": results["headline_metric"],
        "summary": results["significance"]["summary"],
        "examples_evaluated": results["examples_evaluated"],
    }
    if "judge" in results:
        kept = ("wins", "losses", "ties", "win_rate", "p_value", "no_verdict")
        summary["judge"] = {k: results["judge"][k] for k in kept if k in results["judge"]}
    return summary


# --- one run, shared by the worker and the CLI ----------------------------------------------------------
def run_and_score(
    *,
    records: Sequence,
    candidates: Sequence,
    config: EvaluationConfig,
    store,
    load_predictions,
    schema: dict | None = None,
    judge_plan=None,
    judge_backend=None,
    judge_cache=None,
) -> tuple[dict, list]:
    """Ask what the store lacks, then score from the stored predictions and, with a judge, judge the pair.

    ``load_predictions()`` returns every stored prediction (the store's, after the run): results never
    depend on which answers this particular run asked.
    """
    from . import judge as judging
    from .engine import run_evaluation

    run_evaluation(
        records=records,
        candidates=candidates,
        labels=[],
        config=config,
        store=ScoringStore(store, schema),
        request_for=request_for(config, schema),
        prediction_for=prediction_for(schema),
    )
    predictions = list(load_predictions())
    names = [candidate.name for candidate in candidates]
    judged = None
    if judge_plan is not None:
        pairs = judging.pairs_from(predictions, base=names[0], fine_tuned=names[1])
        judged = judging.run(plan=judge_plan, backend=judge_backend, cache=judge_cache, pairs=pairs)
    return compute_results(predictions, candidates=names, schema=schema, judge=judged)
