"""A model as one ZIP, streamed straight from storage to the client.

No temp file and no whole object in memory: each member is the raw object body read in
chunks as the client consumes the archive. Weights are STORED (they barely compress and
deflate runs at ~60 MiB/s). When every size is known (the manifest has them) the archive
is built in zipstream's sized mode, which gives an exact Content-Length so browsers show
progress; sized mode cannot compress, so in that mode everything is STORED. Only when a
size is missing is the archive streamed without a length, and small text files deflated.

Errors mid-stream propagate out of the iterator: the server then drops the connection and
the client sees an incomplete transfer, never a truncated archive that looks complete.
"""

import json
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import zipstream
from django.http import StreamingHttpResponse
from django.template.defaultfilters import filesizeformat

from finetune_studio.keys import download_filename
from finetune_studio.objects import bucket
from finetune_studio.streaming import coalesced, response_chunks

from . import artifacts
from .lineage import lineage_for, model_lineage
from .models import RegisteredModel

# Bigger reads from storage: each chunk costs one thread hop and one trip through the server.
READ_CHUNK_BYTES = 4 * 1024 * 1024
README = "README.md"
METADATA = "metadata.json"


# Small members are fetched whole, a few ahead of the one being sent: each is one storage request
# (≈ 3 ms against the S3 server here), and 200 of them one after the other cost a 512 MiB model a
# quarter of its throughput. Bounded: PREFETCH_AHEAD members of at most PREFETCH_MAX_BYTES each.
PREFETCH_MAX_BYTES = 1024 * 1024
PREFETCH_AHEAD = 8
_prefetch_pool: ThreadPoolExecutor | None = None
_prefetch_pool_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _prefetch_pool
    with _prefetch_pool_lock:
        if _prefetch_pool is None:
            _prefetch_pool = ThreadPoolExecutor(max_workers=PREFETCH_AHEAD, thread_name_prefix="zip-prefetch")
        return _prefetch_pool


class _SmallObjects:
    """The small members of one archive, read a few ahead of the archive's position, in archive order."""

    def __init__(self, keys: list[str]):
        self._keys = keys
        self._futures: dict[int, Future] = {}
        self._next = 0

    def take(self, index: int) -> bytes:
        while self._next < len(self._keys) and self._next <= index + PREFETCH_AHEAD:
            self._futures[self._next] = _pool().submit(bucket("models").read_bytes, self._keys[self._next])
            self._next += 1
        return self._futures.pop(index).result()


def _object_chunks(key: str) -> Iterator[bytes]:
    """Opens the object only when the archive reaches it, so the first byte never waits on storage."""
    yield from bucket("models").iter_chunks(key, chunk_size=READ_CHUNK_BYTES)


def _prefetched(small: _SmallObjects, index: int) -> Iterator[bytes]:
    # A generator, so nothing is requested before the archive reaches (or nears) this member.
    yield small.take(index)


def metadata(model: RegisteredModel, lineage: dict | None = None) -> dict:
    return {
        "id": model.id,
        "name": model.name,
        "description": model.description,
        "base_model": model.base_model,
        "type": model.type,
        "status": model.status,
        "job": model.job_id,
        "created_at": model.created_at.isoformat() if model.created_at else None,
        "updated_at": model.updated_at.isoformat() if model.updated_at else None,
        "total_size": model.total_size,
        "training_metrics": model.training_metrics,
        "eval_results": model.eval_results,
        "files": [
            {key: item.get(key) for key in ("path", "size", "sha256", "crc32", "content_type", "kind")}
            for item in model.files
        ],
        "lineage": lineage if lineage is not None else model_lineage(model),
    }


def model_card(model: RegisteredModel, lineage: dict | None = None) -> str:
    lines = [f"# {model.name}", ""]
    if model.description:
        lines += [model.description, ""]
    lines += [
        f"- Base model: `{model.base_model}`",
        f"- Type: {model.type}",
        f"- Status: {model.status}",
        f"- Training job: #{model.job_id}" if model.job_id else "- Registered through the API",
        f"- Created: {model.created_at:%Y-%m-%d %H:%M UTC}" if model.created_at else "- Created: unknown",
        f"- Total size: {filesizeformat(model.total_size)} in {len(model.files)} files",
        "",
    ]
    final = model.final_metrics
    if final:
        lines += ["## Training metrics (final)", "", "| metric | value |", "|---|---|"]
        lines += [f"| {name} | {value} |" for name, value in sorted(final.items())]
        lines.append("")
    lines += lineage_card(lineage if lineage is not None else model_lineage(model))
    if model.eval_results:
        lines += ["## Latest evaluation", "", "```json", json.dumps(model.eval_results, indent=2)[:4000], "```", ""]
    lines += ["## Files", "", "| path | kind | size | sha256 |", "|---|---|---|---|"]
    lines += [
        f"| `{item['path']}` | {item.get('kind', '')} | {item.get('size', '?')} | `{item.get('sha256', '')}` |"
        for item in model.files
    ]
    lines += ["", f"`{METADATA}` holds the same information as JSON, with CRC-32s. Check a file with `sha256sum`.", ""]
    return "\n".join(lines)


def _cell(value) -> str:
    text = "" if value is None else (json.dumps(value) if isinstance(value, (dict, list)) else str(value))
    return text.replace("|", "\\|").replace("\n", " ")


def lineage_card(lineage: dict) -> list[str]:
    """The README's lineage section: the same facts as metadata.json's ``lineage``."""
    lines = ["## Lineage", ""]
    dataset = lineage.get("dataset")
    if dataset:
        lines.append(
            f"- Dataset: {_cell(dataset.get('name'))} (#{dataset.get('id')}), {dataset.get('records')} records, "
            f"sha256 `{dataset.get('sha256') or 'unknown'}`"
        )
    else:
        lines.append("- Dataset: not recorded")
    validation = lineage.get("validation_dataset")
    if validation:
        lines.append(
            f"- Validation dataset: {_cell(validation.get('name'))} (#{validation.get('id')}), "
            f"{validation.get('records')} records, sha256 `{validation.get('sha256') or 'unknown'}`"
        )
    trainer = lineage.get("trainer") or {}
    job = trainer.get("job") or {}
    if trainer:
        lines.append(
            f"- Trainer: {trainer.get('name') or 'unknown'}" + (f", job #{job.get('id')}" if job.get("id") else "")
        )
    base = lineage.get("base_model") or {}
    lines.append(
        f"- Base model: `{base.get('name')}`" + (f" (identity `{base['identity']}`)" if base.get("identity") else "")
    )
    lines.append(f"- Chat template sha256: `{lineage.get('chat_template_sha256') or 'not recorded'}`")
    ollama = lineage.get("ollama") or {}
    if ollama.get("name"):
        lines.append(
            f"- Ollama: `{ollama['name']}` from `{ollama.get('base')}`, digest `{ollama.get('digest')}`, "
            f"deployed {ollama.get('deployed_at')}" + (", **drifted** (parity check)" if ollama.get("drifted") else "")
        )
    else:
        lines.append("- Ollama: not deployed")
    attempt = ollama.get("last_attempt") or {}
    if attempt.get("status") == "failed":
        # The live deployment above is still the one served: the failed attempt is a separate fact.
        lines.append(f"- Last deploy attempt: failed at {attempt.get('finished_at')}: {_cell(attempt.get('error'))}")
    lines.append("")
    hyperparameters = trainer.get("hyperparameters") or {}
    if hyperparameters:
        lines += ["### Hyperparameters", "", "| name | value |", "|---|---|"]
        lines += [f"| {_cell(name)} | {_cell(value)} |" for name, value in sorted(hyperparameters.items())]
        lines.append("")
    evaluations = lineage.get("evaluations") or []
    if evaluations:
        lines += ["### Evaluations", "", "| id | status | verdict | fine-tuned | base |", "|---|---|---|---|---|"]
        lines += [
            f"| {item['id']} | {item['status']} | {_cell(item.get('verdict'))} | {_cell(item.get('fine_tuned_name'))} "
            f"| {_cell(item.get('base_model_name'))} |"
            for item in evaluations
        ]
        lines.append("")
    return lines


def _generated_names(model: RegisteredModel) -> tuple[str, str]:
    """Our card and metadata sit beside the files; if the model has files with those names, ours step aside."""
    paths = {item["path"] for item in model.files}
    if README in paths or METADATA in paths:
        return f"studio/{README}", f"studio/{METADATA}"
    return README, METADATA


def build_archive(model: RegisteredModel, lineage: dict | None = None) -> zipstream.ZipStream:
    sized = all(isinstance(item.get("size"), int) for item in model.files)
    archive = zipstream.ZipStream(compress_type=zipstream.ZIP_STORED, sized=sized)
    small = [item for item in model.files if isinstance(item.get("size"), int) and item["size"] <= PREFETCH_MAX_BYTES]
    small_index = {id(item): index for index, item in enumerate(small)}
    prefetch = _SmallObjects([model.file_key(item["path"]) for item in small])
    for item in model.files:
        size = item.get("size")
        compress = None if sized or not artifacts.is_small_text(item["path"], size) else zipstream.ZIP_DEFLATED
        if id(item) in small_index:
            data = _prefetched(prefetch, small_index[id(item)])
        else:
            data = _object_chunks(model.file_key(item["path"]))
        archive.add(data, item["path"], size=size, compress_type=compress)
    readme_name, metadata_name = _generated_names(model)
    text_compression = None if sized else zipstream.ZIP_DEFLATED
    lineage = lineage if lineage is not None else model_lineage(model)
    archive.add(model_card(model, lineage).encode(), readme_name, compress_type=text_compression)
    archive.add(json.dumps(metadata(model, lineage), indent=2).encode(), metadata_name, compress_type=text_compression)
    return archive


def zip_response(request, model: RegisteredModel) -> StreamingHttpResponse:
    archive = build_archive(model, lineage_for(request.user, model))
    content = response_chunks(request, coalesced(archive))
    response = StreamingHttpResponse(content, content_type="application/zip")
    if archive.sized:
        response["Content-Length"] = str(len(archive))
    filename = download_filename(model.name or f"model-{model.id}", extension=".zip")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "private, no-store"
    response["X-Accel-Buffering"] = "no"
    return response
