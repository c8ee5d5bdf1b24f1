"""The evaluation engine: prompts, answers parsed into labels, bounded concurrency, resumable.

Pure Python (no Django at import time), shared by the Celery task and
``scripts/evaluate_model.py``. The caller hands in the records, the candidate model
names (the base first) and a ``PredictionStore``; the engine asks Ollama for every
(example, candidate) pair the store does not hold yet and hands finished predictions
back to the store in batches, always from the calling thread (worker threads only do
HTTP), so a store may use a database connection that is not thread-safe.
"""

from __future__ import annotations

import json
import re
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from typing import Protocol

from inference.ollama import ChatAnswer, OllamaClient, OllamaError

DEFAULT_PROMPT_TEMPLATE = (
    "Classify the text below into exactly one of these labels: {labels}.\n"
    'Answer with JSON of the form {"label": "<one of the labels>"} and nothing else.\n\n'
    "Text:\n{text}"
)
DEFAULT_SEED = 42
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
    timeout: float = 120.0
    max_retries: int = 3
    retry_backoff: float = 0.5
    num_predict: int = 64

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
def run_evaluation(
    *,
    records: Sequence,
    candidates: Sequence[str],
    labels: Sequence[str],
    config: EvaluationConfig,
    client: OllamaClient,
    store: PredictionStore,
    flush_interval: float = 0.5,
) -> None:
    """Ask every candidate about every record the store lacks; returns when all are stored.

    Raises OllamaError (the first failure that retries could not fix) or EvaluationCancelled;
    predictions finished before either are saved first, so a later run resumes after them.
    """
    total = len(records) * len(candidates)
    stored = store.stored_keys()
    pending = [
        (index, candidate)
        for index in range(len(records))
        for candidate in candidates
        if (index, candidate) not in stored
    ]
    done = total - len(pending)
    options = {"temperature": config.temperature, "seed": config.seed, "num_predict": config.num_predict}
    schema = label_schema(labels)
    stop = threading.Event()

    def ask(index: int, candidate: str) -> Prediction:
        record = records[index]
        # Shown beside the answers: the record's own input, not the instruction every record repeats.
        shown = record.input.strip() or record.text
        prediction = Prediction(index=index, candidate=candidate, expected=record.label, input_text=shown)
        if stop.is_set():
            raise EvaluationCancelled()
        answer: ChatAnswer = client.chat(
            model=candidate,
            prompt=build_prompt(config.prompt_template, text=record.text, labels=labels),
            options=options,
            format=schema,
        )
        prediction.prediction_text = answer.content
        prediction.parsed_label = parse_label(answer.content, labels)
        prediction.correct = prediction.parsed_label == record.label
        prediction.latency_ms = round(answer.latency_ms, 3)
        prediction.eval_count = answer.eval_count
        prediction.eval_duration_ns = answer.eval_duration_ns
        return prediction

    buffer: list[Prediction] = []
    failure: BaseException | None = None
    last_flush = time.monotonic()
    work = iter(pending)
    in_flight: set[Future] = set()
    window = max(1, config.concurrency) * 2
    with ThreadPoolExecutor(max_workers=max(1, config.concurrency), thread_name_prefix="evaluation") as pool:
        try:
            while True:
                while failure is None and not stop.is_set() and len(in_flight) < window:
                    item = next(work, None)
                    if item is None:
                        break
                    in_flight.add(pool.submit(ask, *item))
                if not in_flight:
                    break
                finished, in_flight = wait(in_flight, timeout=flush_interval, return_when=FIRST_COMPLETED)
                for future in finished:
                    exc = future.exception()
                    if exc is None:
                        buffer.append(future.result())
                    elif failure is None and not isinstance(exc, EvaluationCancelled):
                        failure = exc
                        stop.set()
                        client.abort()
                now = time.monotonic()
                if now - last_flush >= flush_interval or not in_flight:
                    done += len(buffer)
                    store.save(buffer, done=done, total=total)
                    buffer = []
                    last_flush = now
                    if failure is None and store.should_stop():
                        stop.set()
                        client.abort()
                        failure = EvaluationCancelled()
        except BaseException:
            # Interrupted (KeyboardInterrupt in the CLI): queued requests are dropped, not sent.
            stop.set()
            client.abort()
            for future in in_flight:
                future.cancel()
            raise
    if buffer:
        done += len(buffer)
        store.save(buffer, done=done, total=total)
    if failure is not None:
        raise failure


__all__ = [
    "DEFAULT_PROMPT_TEMPLATE",
    "EvaluationCancelled",
    "EvaluationConfig",
    "EvaluationInputError",
    "MemoryStore",
    "OllamaError",
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
