"""A registry model's LoRA adapter as a folder the local engine loads, on the worker that evaluates it.

The adapter's files (everything under ``lora_adapters/`` in the model's manifest) are copied from the models
bucket into a per-worker cache folder named by the sha256 of the files' own sha256s, each file checked
against the manifest as it is written. A second evaluation of the same adapter on the same worker reads
nothing; a changed adapter gets a new folder. Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from django.conf import settings

from finetune_studio.keys import InvalidName, clean_relative_path
from finetune_studio.objects import ObjectNotFound, StorageError, bucket
from models_app import artifacts

ADAPTERS_DIR = artifacts.ADAPTERS_DIR
_COMPLETE = ".complete"


class AdapterUnavailable(Exception):
    """The adapter cannot be made into a folder (missing, damaged, storage down); the message says why."""


def adapter_files(model) -> list[dict]:
    """The manifest entries of the model's adapter folder (empty when it has none)."""
    return artifacts.adapter_folder_files(model.files)


def has_adapter(model) -> bool:
    return artifacts.has_lora_adapter(model.files)


def adapter_folder(model) -> Path:
    """The adapter's local folder, downloaded and checksum-checked on first use; AdapterUnavailable otherwise."""
    files = adapter_files(model)
    if not has_adapter(model):
        raise AdapterUnavailable(f"model #{model.id} has no LoRA adapter (adapter_config.json and weights)")
    for entry in files:
        try:
            clean_relative_path(entry["path"], what="adapter file")
        except InvalidName as exc:
            raise AdapterUnavailable(f"model #{model.id} has an unusable adapter file: {exc}") from None
        if not isinstance(entry.get("sha256"), str) or len(entry["sha256"]) != 64:
            raise AdapterUnavailable(f"model #{model.id}: {entry['path']} has no sha256 in the manifest")
    identity = json.dumps(sorted((entry["path"], entry["sha256"]) for entry in files))
    digest = hashlib.sha256(identity.encode()).hexdigest()
    cache = Path(settings.LOCAL_INFERENCE_CACHE_DIR)
    folder = cache / digest
    if (folder / _COMPLETE).is_file():
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{digest[:12]}-", dir=cache))
    try:
        models = bucket("models")
        for entry in files:
            relative = entry["path"][len(ADAPTERS_DIR) :]
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            checksum = hashlib.sha256()
            with open(target, "wb") as handle:
                for chunk in models.iter_chunks(model.file_key(entry["path"])):
                    checksum.update(chunk)
                    handle.write(chunk)
            if checksum.hexdigest() != entry["sha256"]:
                raise AdapterUnavailable(
                    f"model #{model.id}: {entry['path']} does not match its sha256 in the manifest (damaged in storage)"
                )
        (staging / _COMPLETE).write_text(digest + "\n")
        try:
            os.replace(staging, folder)
        except OSError:
            # Another evaluation on this worker finished the same download first: its folder is as good.
            if not (folder / _COMPLETE).is_file():
                raise
    except ObjectNotFound as exc:
        raise AdapterUnavailable(f"model #{model.id}: an adapter file is missing from storage ({exc})") from None
    except StorageError as exc:
        raise AdapterUnavailable(f"model #{model.id}: the adapter could not be read from storage: {exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def chat_template_sha256(folder: Path) -> str | None:
    """The sha256 of the chat template the adapter's tokenizer saved, as the trainer records it."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return hashlib.sha256(jinja.read_text(encoding="utf-8").encode()).hexdigest()
    try:
        template = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8")).get("chat_template")
    except (OSError, ValueError):
        return None
    return hashlib.sha256(template.encode()).hexdigest() if isinstance(template, str) else None
