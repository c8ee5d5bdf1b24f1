"""What a dataset looks like to the trainer: records rendered through a base's chat template, token lengths.

The base is picked by name from ``preview_bases()``; a path never comes from a request. Rendering and the
loss mask are lora-sft's own (``trainers.lora_sft.chat``), tokenized by the base's tokenizer loaded without
torch, so the page shows exactly the ids and trained tokens the trainer will use.
"""

import hashlib
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from django.conf import settings
from django.core.cache import cache

from finetune_studio import objects, records
from finetune_studio.base_models import base_model_catalogue

from .models import Dataset

MAX_PREVIEW_RECORDS = 50
HISTOGRAM_BINS = 12


def preview_bases() -> dict[str, Path]:
    """Base models the dataset page may render with, by name: the catalogue's bases that carry a tokenizer.

    A name not listed here is refused: no user-given filesystem path (finetune_studio/base_models.py).
    """
    return {
        entry.name: entry.path
        for entry in base_model_catalogue()
        if entry.path is not None
        and (entry.path / "tokenizer.json").is_file()
        and (entry.path / "tokenizer_config.json").is_file()
    }


class PreviewUnavailable(ValueError):
    pass


@lru_cache(maxsize=4)
def _tokenizer(folder: str, stamp: float):
    from trainers.lora_sft.chat import TemplateTokenizer

    return TemplateTokenizer(folder)


def preview_tokenizer(base_name: str):
    folder = preview_bases().get(base_name)
    if folder is None:
        raise PreviewUnavailable(f"unknown base model {base_name[:100]!r}: pick one of the listed bases")
    try:
        # Rebuilt bases (build_demo_base --force) are read again: the file's time is part of the cache key.
        return _tokenizer(str(folder), (folder / "tokenizer.json").stat().st_mtime)
    except Exception as exc:  # tokenizers raises plain Exception on a broken file: the page says so, no 500
        raise PreviewUnavailable(f"the tokenizer of {base_name} cannot be read ({type(exc).__name__})") from None


@dataclass(frozen=True)
class Token:
    text: str
    trained: bool


@dataclass(frozen=True)
class RenderedRecord:
    number: int
    tokens: list[Token]
    trained_tokens: int
    truncated: bool
    error: str = ""


@dataclass(frozen=True)
class LengthSummary:
    records: int  # read for the histogram (at most DATASET_PREVIEW_MAX_RECORDS)
    over_max_length: int
    longest: int
    bins: list[dict]  # {"low", "high", "count", "percent"}
    errors: int  # records the template refused


def _read(dataset: Dataset, limit: int):
    chunks = objects.bucket("datasets").iter_chunks(dataset.path.removeprefix("datasets/"))
    for index, record in enumerate(records.iter_records(chunks, dataset.file_format)):
        if index >= limit:
            return
        yield record


def dataset_rendered_records(*, dataset: Dataset, base_name: str, count: int, max_length: int) -> list[RenderedRecord]:
    """The first ``count`` records as the trainer encodes them (truncated to ``max_length``), token by token."""
    from trainers.lora_sft.chat import IGNORE_INDEX, RenderError, encode_record

    tokenizer = preview_tokenizer(base_name)
    rendered = []
    deadline = time.monotonic() + settings.DATASET_PREVIEW_MAX_SECONDS
    for number, record in enumerate(_read(dataset, min(count, MAX_PREVIEW_RECORDS)), start=1):
        if number > 1 and time.monotonic() > deadline:  # long conversations: the page stays a page
            break
        try:
            example = encode_record(tokenizer, record, system_prompt="", max_length=max_length)
        except RenderError as exc:
            rendered.append(RenderedRecord(number, [], 0, False, error=str(exc)))
            continue
        tokens = [
            Token(tokenizer.decode([token]), label != IGNORE_INDEX)
            for token, label in zip(example.input_ids, example.labels, strict=True)
        ]
        rendered.append(RenderedRecord(number, tokens, example.answer_tokens, example.prompt_truncated))
    return rendered


def dataset_token_lengths(*, dataset: Dataset, base_name: str, max_length: int) -> LengthSummary:
    """Token lengths of the whole rendered records for that base, as a histogram.

    The lengths are cached per file and base (not per max_length: another max_length only recounts).
    """
    folder = preview_bases().get(base_name)
    stamp = (folder / "tokenizer.json").stat().st_mtime if folder else 0
    limit = settings.DATASET_PREVIEW_MAX_RECORDS
    key_source = f"{dataset.sha256}:{dataset.path}:{base_name}:{stamp}:{limit}"
    key = "dataset-lengths:" + hashlib.sha256(key_source.encode()).hexdigest()
    cached = cache.get(key)
    if cached is None:
        from trainers.lora_sft.chat import RenderError, token_length

        tokenizer = preview_tokenizer(base_name)
        lengths, errors = [], 0
        # Bounded in time as well as in records: a file of long conversations must not hold a web worker.
        deadline = time.monotonic() + settings.DATASET_PREVIEW_MAX_SECONDS
        for index, record in enumerate(_read(dataset, limit)):
            if index and time.monotonic() > deadline:
                break
            try:
                lengths.append(token_length(tokenizer, record))
            except RenderError:
                errors += 1
        cached = (lengths, errors)
        cache.set(key, cached, timeout=3600)
    lengths, errors = cached
    return LengthSummary(
        records=len(lengths) + errors,
        over_max_length=sum(1 for length in lengths if length > max_length),
        longest=max(lengths, default=0),
        bins=_bins(lengths),
        errors=errors,
    )


def _bins(lengths: list[int]) -> list[dict]:
    if not lengths:
        return []
    low, high = min(lengths), max(lengths)
    width = max(1, -(-(high - low + 1) // HISTOGRAM_BINS))
    counts = [0] * (-(-(high - low + 1) // width))
    for length in lengths:
        counts[(length - low) // width] += 1
    peak = max(counts)
    return [
        {
            "low": low + index * width,
            "high": low + (index + 1) * width - 1,
            "count": count,
            "percent": round(100 * count / len(lengths), 1),
            "bar": round(100 * count / peak),
        }
        for index, count in enumerate(counts)
    ]
