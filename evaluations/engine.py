"""The evaluation engine: prompts, answers parsed into labels, bounded concurrency, resumable.

Pure Python (no Django at import time), shared by the Celery task and
``scripts/evaluate_model.py``. The caller hands in the records, the candidate model
(the base first, each with the ``inference`` backend that answers for it) and a
``PredictionStore``; the engine asks every (example, candidate) pair the store does not
hold yet and hands finished predictions back to the store in batches, always from the
calling thread (backends answer from their own threads), so a store may use a database
connection that is not thread-safe.
"""

from __future__ import annotations

import json
import queue
import re
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol

from inference.base import Answer, Backend, ChatOptions, ChatRequest, InferenceError

DEFAULT_PROMPT_TEMPLATE = (
    "Classify the text below into exactly one of these labels: {labels}.\n"
    'Answer with JSON of the form {"label": "<one of the labels>"} and nothing else.\n\n'
    "Text:\n{text}"
)
DEFAULT_SEED = 42
PROMPT_TEMPLATE = "template"  # the prompt template (the instruction, the label list) around each record
PROMPT_AS_TRAINED = "as_trained"  # the record as a lora-sft model was taught: its system prompt, the record's text
MAX_LABELS = 200


class EvaluationInputError(ValueError):
    """The test set or the configuration cannot be evaluated; the message says why."""


class EvaluationCancelled(Exception):
    pass


@dataclass
class EvaluationConfig:
    labels: list[str] = field(default_factory=list)
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    temperature: float = 0.0
    seed: int = DEFAULT_SEED
    max_examples: int | None = None
    concurrency: int = 4
    timeout: float | None = None  # None: each endpoint's own
    max_retries: int = 3
    retry_backoff: float = 0.5
    num_predict: int = 64
    prompt_style: str = PROMPT_TEMPLATE
    system_prompt: str = ""

    @classmethod
    def from_dict(cls, data: dict) -> EvaluationConfig:
        known = {name for name in cls.__dataclass_fields__}
        return cls(**{key: value for key, value in (data or {}).items() if key in known and value is not None})

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Prediction:
    index: int
    candidate: str
    expected: str
    input_text: str
    prediction_text: str = ""
    parsed_label: str | None = None
    correct: bool = False
    latency_ms: float | None = None
    eval_count: int | None = None
    eval_duration_ns: int | None = None
    error: str = ""
    scores: dict = field(default_factory=dict)  # generation: per-metric scores of this answer


class PredictionStore(Protocol):
    """Where predictions go as they complete. Called only from the engine's calling thread."""

    def stored_keys(self) -> set[tuple[int, str]]: ...

    def save(self, predictions: list[Prediction], *, done: int, total: int) -> None: ...

    def should_stop(self) -> bool: ...


class MemoryStore:
    """For the CLI and tests: predictions in a list, optionally preloaded (resume from a JSON file)."""

    def __init__(self, predictions: Iterable[Prediction] = (), on_progress: Callable[[int, int], None] | None = None):
        self.predictions: list[Prediction] = list(predictions)
        self.on_progress = on_progress
        self.cancelled = threading.Event()

    def stored_keys(self) -> set[tuple[int, str]]:
        return {(p.index, p.candidate) for p in self.predictions}

    def save(self, predictions: list[Prediction], *, done: int, total: int) -> None:
        self.predictions.extend(predictions)
        if self.on_progress:
            self.on_progress(done, total)

    def should_stop(self) -> bool:
        return self.cancelled.is_set()


# --- candidates -------------------------------------------------------------------------------------
def ollama_model_key(name: str) -> str:
    """The model Ollama resolves a name to: without a tag, ``name`` is ``name:latest``."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def distinct_fine_tuned(base: str, fine_tuned: Iterable[str]) -> list[str]:
    """Each fine-tuned model once, under the first spelling given ("x" and "x:latest" are one model).

    Raises EvaluationInputError when one of them is the base: a model is not compared with itself.
    """
    unique: dict[str, str] = {}
    for name in fine_tuned:
        unique.setdefault(ollama_model_key(name), name)
    same_as_base = unique.get(ollama_model_key(base))
    if same_as_base is not None:
        raise EvaluationInputError(
            "every candidate (base and fine-tuned models) must be a different model: "
            f"{same_as_base!r} is the base model"
        )
    return list(unique.values())


# --- test sets --------------------------------------------------------------------------------------
def prepare_examples(records: Sequence, config: EvaluationConfig) -> tuple[list, list[str]]:
    """Check the records against the configuration; returns (records to ask, label set)."""
    if not records:
        raise EvaluationInputError("the test set has no records")
    test_labels = sorted({record.label for record in records})
    labels = [label.strip() for label in config.labels if label and label.strip()] if config.labels else test_labels
    if len(set(labels)) != len(labels):
        raise EvaluationInputError("labels contain duplicates")
    if len(labels) < 2:
        raise EvaluationInputError(f"an evaluation needs at least two labels (found: {', '.join(labels) or 'none'})")
    if len(labels) > MAX_LABELS:
        raise EvaluationInputError(f"at most {MAX_LABELS} labels are supported (found {len(labels)})")
    unknown = sorted(set(test_labels) - set(labels))
    if unknown:
        shown = ", ".join(unknown[:10]) + (" …" if len(unknown) > 10 else "")
        raise EvaluationInputError(f"the test set has labels that are not in the label list: {shown}")
    selected = list(records[: config.max_examples] if config.max_examples else records)
    return selected, labels


def load_records_from_bytes(data: bytes, filename: str) -> list:
    """Read a test set with the project's one parser; errors become EvaluationInputError."""
    from finetune_studio.records import RecordError, read_records_from_bytes

    try:
        return read_records_from_bytes(data, filename)
    except RecordError as exc:
        raise EvaluationInputError(f"the test set is not valid: {exc}") from None


def load_records_from_file(path: str) -> list:
    from finetune_studio.records import RecordError, open_records

    try:
        return open_records(path)
    except RecordError as exc:
        raise EvaluationInputError(f"the test set is not valid: {exc}") from None
    except OSError as exc:
        raise EvaluationInputError(f"cannot read the test set {path}: {exc.strerror or exc}") from None


# --- prompts and answers ----------------------------------------------------------------------------
def build_prompt(template: str, *, text: str, labels: Sequence[str]) -> str:
    # str.replace, not str.format: templates and texts are full of braces (JSON examples).
    return template.replace("{labels}", ", ".join(labels)).replace("{text}", text)


def label_schema(labels: Sequence[str]) -> dict:
    return {
        "type": "object",
        "properties": {"label": {"type": "string", "enum": list(labels)}},
        "required": ["label"],
    }


def _normalize(text: str) -> str:
    """Case-folded, accents kept, every run of punctuation/whitespace turned into one space."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(re.sub(r"[\W_]+", " ", text).split())


def parse_label(answer: str, labels: Sequence[str]) -> str | None:
    """The label an answer names, or None (unparseable, counted wrong).

    Rules, in order:
    1. JSON: an object with a ``label`` (or ``answer``/``class``/``category``) string, or a
       JSON string, is matched as a whole (case, spaces and punctuation ignored).
       A JSON object embedded in text (```json fences, "Answer: {...}") counts too.
    2. The whole answer equals a label once normalised ("  Positive. " → positive).
    3. Labels mentioned inside a sentence, as whole words: a mention inside a longer
       mentioned label does not count ("very positive" is not also "positive"); of the
       remaining mentions the first one in the answer wins.
    """
    if not isinstance(answer, str) or not answer.strip():
        return None
    by_normal = {}
    for label in labels:
        by_normal.setdefault(_normalize(label), label)
    for candidate in _json_candidates(answer):
        match = by_normal.get(_normalize(candidate))
        if match is not None:
            return match
    normalized = _normalize(answer)
    if normalized in by_normal:
        return by_normal[normalized]
    padded = f" {normalized} "
    mentions: list[tuple[int, int, str]] = []
    for normal, label in by_normal.items():
        if not normal:
            continue
        needle = f" {normal} "
        start = padded.find(needle)
        while start != -1:
            mentions.append((start, start + len(needle), label))
            start = padded.find(needle, start + 1)
    if not mentions:
        return None
    kept = [
        m
        for m in mentions
        if not any(o is not m and o[0] <= m[0] and m[1] <= o[1] and (o[1] - o[0]) > (m[1] - m[0]) for o in mentions)
    ]
    kept.sort(key=lambda m: (m[0], -(m[1] - m[0])))
    return kept[0][2]


_JSON_OBJECT = re.compile(r"\{[^{}]*\}", re.DOTALL)
_LABEL_KEYS = ("label", "answer", "class", "category", "prediction")


def _json_candidates(answer: str) -> list[str]:
    texts = [answer.strip()]
    texts += [match.group(0) for match in _JSON_OBJECT.finditer(answer)]
    found = []
    for text in texts:
        try:
            value = json.loads(text)
        except ValueError:
            continue
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, dict):
            for key in _LABEL_KEYS:
                if isinstance(value.get(key), str):
                    found.append(value[key])
                    break
            else:
                strings = [v for v in value.values() if isinstance(v, str)]
                if len(strings) == 1:
                    found.append(strings[0])
    return found


# --- running ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    """One model to ask: ``name`` is what predictions and results record, ``backend`` where it is asked.

    ``model`` is the name the backend knows it by (the same as ``name`` unless the caller says otherwise).
    Candidates that share a backend are asked through one ``chat_many``, so its concurrency bound holds
    for the whole run.
    """

    name: str
    backend: Backend
    model: str = ""

    @property
    def backend_model(self) -> str:
        return self.model or self.name


def chat_request(record, *, model: str, labels: Sequence[str], config: EvaluationConfig) -> ChatRequest:
    """What one candidate is asked about one record.

    ``as_trained``: the record's own text as the user turn after the training system prompt, exactly the
    conversation a lora-sft model learned from (no instruction, no schema forcing a JSON shape it never
    saw). Otherwise the prompt template with the label list, and the label schema where it is enforced.
    """
    options = ChatOptions(temperature=config.temperature, seed=config.seed, max_tokens=config.num_predict)
    if config.prompt_style == PROMPT_AS_TRAINED:
        return ChatRequest.from_prompt(model, record.text, system=config.system_prompt, options=options)
    return ChatRequest.from_prompt(
        model,
        build_prompt(config.prompt_template, text=record.text, labels=labels),
        options=options,
        schema=label_schema(labels),
    )


def run_evaluation(
    *,
    records: Sequence,
    candidates: Sequence[Candidate],
    labels: Sequence[str],
    config: EvaluationConfig,
    store: PredictionStore,
    flush_interval: float = 0.5,
    request_for: Callable[..., ChatRequest] | None = None,
    prediction_for: Callable[..., Prediction] | None = None,
) -> None:
    """Ask every candidate about every record the store lacks; returns when all are stored.

    Raises the first InferenceError an answer came back with (the backend already retried what was worth
    retrying) or EvaluationCancelled; predictions finished before either are saved first, so a later run
    resumes after them. Backends answer from their own threads (one feeder per backend); the store is
    only ever called from this thread.

    ``request_for(record, model=)`` and ``prediction_for(record, index, candidate_name, answer)`` say what a
    task asks and keeps (``evaluations.generation``); absent, the classification prompt and label parsing.
    """
    if request_for is None:

        def request_for(record, *, model):
            return chat_request(record, model=model, labels=labels, config=config)

    if prediction_for is None:

        def prediction_for(record, index, name, answer):
            return _prediction(record, index, name, answer, labels)

    total = len(records) * len(candidates)
    stored = store.stored_keys()
    groups: dict[int, tuple[Backend, list[tuple[int, Candidate]]]] = {}
    for index in range(len(records)):
        for candidate in candidates:
            if (index, candidate.name) not in stored:
                groups.setdefault(id(candidate.backend), (candidate.backend, []))[1].append((index, candidate))
    done = total - sum(len(items) for _, items in groups.values())
    stop = threading.Event()
    outcomes: queue.Queue = queue.Queue()
    finished_marker = object()

    def feed(backend: Backend, items: list[tuple[int, Candidate]]) -> None:
        try:
            requests = [request_for(records[index], model=candidate.backend_model) for index, candidate in items]
            answers = backend.chat_many(requests)
            try:
                for outcome in answers:
                    outcomes.put((items[outcome.index], outcome))
                    if stop.is_set():
                        break
            finally:
                answers.close()  # stops submitting and aborts pending backoffs (see Backend.chat_many)
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread, which raises it
            outcomes.put((None, exc))
        finally:
            outcomes.put((None, finished_marker))

    feeders = [
        threading.Thread(target=feed, args=group, name=f"evaluation-{group[0].endpoint}", daemon=True)
        for group in groups.values()
    ]
    buffer: list[Prediction] = []
    failure: BaseException | None = None
    last_flush = time.monotonic()
    running = len(feeders)

    def halt(reason: BaseException) -> None:
        nonlocal failure
        if failure is None:
            failure = reason
        stop.set()
        for backend, _ in groups.values():
            backend.abort()

    for feeder in feeders:
        feeder.start()
    try:
        while running:
            try:
                item, outcome = outcomes.get(timeout=flush_interval)
            except queue.Empty:
                item, outcome = None, None
            if outcome is finished_marker:
                running -= 1
            elif isinstance(outcome, BaseException):
                halt(outcome)
            elif outcome is not None:
                index, candidate = item
                if outcome.error is not None:
                    halt(outcome.error)
                else:
                    buffer.append(prediction_for(records[index], index, candidate.name, outcome.answer))
            now = time.monotonic()
            if now - last_flush >= flush_interval or not running:
                done += len(buffer)
                store.save(buffer, done=done, total=total)
                buffer = []
                last_flush = now
                if failure is None and store.should_stop():
                    halt(EvaluationCancelled())
    except BaseException:
        # Interrupted (KeyboardInterrupt in the CLI): nothing more is sent.
        halt(EvaluationCancelled())
        raise
    if buffer:
        done += len(buffer)
        store.save(buffer, done=done, total=total)
    if failure is not None:
        raise failure


def _prediction(record, index: int, candidate: str, answer: Answer, labels: Sequence[str]) -> Prediction:
    # Shown beside the answers: the record's own input, not the instruction every record repeats.
    shown = record.input.strip() or record.text
    parsed = parse_label(answer.content, labels)
    return Prediction(
        index=index,
        candidate=candidate,
        expected=record.label,
        input_text=shown,
        prediction_text=answer.content,
        parsed_label=parsed,
        correct=parsed == record.label,
        latency_ms=round(answer.latency_ms, 3),
        eval_count=answer.completion_tokens,
        eval_duration_ns=answer.generation_ns,
    )


__all__ = [
    "DEFAULT_PROMPT_TEMPLATE",
    "EvaluationCancelled",
    "EvaluationConfig",
    "EvaluationInputError",
    "InferenceError",
    "MemoryStore",
    "Candidate",
    "chat_request",
    "Prediction",
    "build_prompt",
    "distinct_fine_tuned",
    "label_schema",
    "load_records_from_bytes",
    "load_records_from_file",
    "ollama_model_key",
    "parse_label",
    "prepare_examples",
    "run_evaluation",
]
