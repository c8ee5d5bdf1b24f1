"""Which base models a job may name: the studio's catalogue and the folders an operator allows.

A trainer that loads its base (lora-sft) gets a folder only from here, never from a user's text:

- a name the studio knows: ``demo-base`` (``DEMO_BASE_DIR``), a name the operator declares in
  ``BASE_MODELS`` (``{"name": "/folder"}``), a folder directly under ``BASE_MODELS_DIR`` (by its folder
  name), or a repository already in the local Hugging Face cache (``org/name``, never downloaded);
- or an absolute path that, with every symlink resolved, lies inside ``BASE_MODELS_DIR`` or one of
  ``BASE_MODEL_ROOTS``.

Nothing inside the studio's own storage (``VAR_DIR``, local buckets, media, static, job work folders) is
ever accepted as a path, even under an allowed root, so no user can train on another user's files. Trainers
that only record the name (``external``, ``example``) accept any name, but a path must still pass the
same rule, so no model or job ever shows a server path outside the allowed roots.

Imports no app: jobs checks at creation, the runner checks again before the trainer starts.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

DEMO_BASE = "demo-base"
MAX_NAME_LENGTH = 200
_LISTED_NAMES = 8
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024


class BaseModelRefused(ValueError):
    """The base model cannot be used; ``reason`` names the rule (it never echoes a file's contents)."""

    def __init__(self, value: str, reason: str):
        super().__init__(f"base model {value!r} {reason}")
        self.value = value
        self.reason = reason


@dataclass(frozen=True)
class BaseModel:
    name: str  # what the job, the model and the lineage record
    path: Path | None  # the folder a trainer loads; None for a name that is only recorded
    source: str  # "demo", "declared", "folder", "hf-cache", "path" or "name"


def base_model_resolve(value: str, *, loadable: bool) -> BaseModel:
    """The base model ``value`` names, or BaseModelRefused saying why.

    ``loadable``: the trainer loads the base, so it must be a folder of the catalogue or inside an
    allowed root; otherwise any plain name is recorded as given.
    """
    text = (value or "").strip()
    if not text:
        raise BaseModelRefused(value, "is empty: name a base model (for example demo-base)")
    if len(text) > MAX_NAME_LENGTH:
        raise BaseModelRefused(text[:40] + "…", f"is longer than {MAX_NAME_LENGTH} characters")
    if any(ord(char) < 32 or ord(char) == 127 for char in text):
        raise BaseModelRefused(text, "contains control characters")
    known = _catalogue_entry(text)
    if known is not None:
        if loadable and known.path is None:
            raise BaseModelRefused(text, _not_built_reason(text))
        return known
    if _looks_like_path(text):
        return _resolve_path(text, loadable=loadable)
    if loadable:
        names = ", ".join(entry.name for entry in base_model_catalogue()[:_LISTED_NAMES]) or "none yet"
        raise BaseModelRefused(
            text,
            "is not available here: name one of the studio's base models "
            f"({names}; see GET /api/v1/base-models) or a folder inside BASE_MODELS_DIR",
        )
    return BaseModel(name=text, path=None, source="name")


def base_model_catalogue() -> list[BaseModel]:
    """Every loadable base model this machine has, by name (nothing is downloaded)."""
    entries: dict[str, BaseModel] = {}
    demo = _model_folder(Path(settings.DEMO_BASE_DIR))
    if demo is not None:
        entries[DEMO_BASE] = BaseModel(name=DEMO_BASE, path=demo, source="demo")
    for name, folder in sorted(settings.BASE_MODELS.items()):
        path = _model_folder(Path(folder))
        if path is not None and not _inside_storage(path):
            entries.setdefault(name, BaseModel(name=name, path=path, source="declared"))
    root = Path(settings.BASE_MODELS_DIR)
    if root.is_dir() and not _inside_storage(root.resolve()):
        for child in sorted(root.iterdir()):
            path = _model_folder(child)
            if path is not None and _inside_allowed_roots(path) and not _inside_storage(path):
                entries.setdefault(child.name, BaseModel(name=child.name, path=path, source="folder"))
    for name, path in _hf_cache_entries():
        entries.setdefault(name, BaseModel(name=name, path=path, source="hf-cache"))
    return list(entries.values())


def base_model_describe(entry: BaseModel) -> dict:
    """What the catalogue shows of a base: read from its files (config, tokenizer, safetensors headers), no torch."""
    folder = entry.path
    config = _read_json(folder / "config.json") if folder else {}
    tokenizer_config = _read_json(folder / "tokenizer_config.json") if folder else {}
    architectures = config.get("architectures") or []
    return {
        "name": entry.name,
        "source": entry.source,
        "architecture": architectures[0] if architectures else config.get("model_type", ""),
        "model_type": config.get("model_type", ""),
        "parameters": _parameter_count(folder) if folder else None,
        "chat_template": bool(
            folder and (tokenizer_config.get("chat_template") or (folder / "chat_template.jinja").is_file())
        ),
        "size_bytes": _size_on_disk(folder) if folder else 0,
    }


def base_model_settings_problems() -> list[str]:
    """Operator settings that cannot work as meant (shown by a system check)."""
    problems = []
    for label, folder in [("BASE_MODELS_DIR", settings.BASE_MODELS_DIR)] + [
        ("BASE_MODEL_ROOTS", root) for root in settings.BASE_MODEL_ROOTS
    ]:
        if _inside_storage(Path(os.path.realpath(folder))):
            problems.append(f"{label} {folder} is inside the studio's own storage: its folders are refused")
    for name, folder in settings.BASE_MODELS.items():
        if _inside_storage(Path(os.path.realpath(folder))):
            problems.append(f"BASE_MODELS[{name!r}] is inside the studio's own storage and is ignored")
    return problems


def _catalogue_entry(name: str) -> BaseModel | None:
    if name == DEMO_BASE:
        path = _model_folder(Path(settings.DEMO_BASE_DIR))
        return BaseModel(name=DEMO_BASE, path=path, source="demo")
    for entry in base_model_catalogue():
        if entry.name == name:
            return entry
    return None


def _not_built_reason(name: str) -> str:
    if name == DEMO_BASE:
        return "is not built here yet: `make run` builds it, or run `manage.py build_demo_base`"
    return "is not available here"


def _looks_like_path(text: str) -> bool:
    return (
        text.startswith(("/", "~", "."))
        or "\\" in text
        or ".." in text.split("/")
        or text.startswith("file:")
        or (len(text) > 1 and text[1] == ":")  # a Windows drive
    )


def _resolve_path(text: str, *, loadable: bool) -> BaseModel:
    if not text.startswith("/"):
        raise BaseModelRefused(
            text, "is not an absolute path: give a base model's name, or a folder inside BASE_MODELS_DIR"
        )
    real = Path(os.path.realpath(text))
    if _inside_storage(real):
        raise BaseModelRefused(text, "is inside the studio's own storage, which is never used as a base model")
    if not _inside_allowed_roots(real):
        raise BaseModelRefused(
            text,
            "is outside the folders allowed for base models (BASE_MODELS_DIR and BASE_MODEL_ROOTS, symlinks resolved)",
        )
    if loadable and _model_folder(real) is None:
        raise BaseModelRefused(text, "is not available here: it is not a model folder (no config.json)")
    root = Path(settings.BASE_MODELS_DIR).resolve()
    name = real.name if real.parent == root else str(real)
    return BaseModel(name=name, path=real, source="path")


def _model_folder(path: Path) -> Path | None:
    try:
        real = path.resolve()
        return real if (real / "config.json").is_file() else None
    except OSError:
        return None


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _inside_allowed_roots(real: Path) -> bool:
    roots = [settings.BASE_MODELS_DIR, *settings.BASE_MODEL_ROOTS]
    return any(_inside(real, Path(os.path.realpath(root))) for root in roots)


def _storage_roots() -> list[Path]:
    roots = [settings.VAR_DIR, settings.LOCAL_STORAGE_ROOT, settings.MEDIA_ROOT, settings.STATIC_ROOT]
    if settings.JOB_WORK_DIR:
        roots.append(settings.JOB_WORK_DIR)
    for config in settings.STORAGES.values():
        location = (config.get("OPTIONS") or {}).get("location")
        if location:
            roots.append(location)
    return [Path(os.path.realpath(root)) for root in roots]


def _inside_storage(real: Path) -> bool:
    return any(_inside(real, root) for root in _storage_roots())


def _hf_cache_entries() -> list[tuple[str, Path]]:
    """``models--org--name`` repositories of the hub cache with a snapshot holding a config.json."""
    cache = Path(settings.HF_HUB_CACHE)
    if not cache.is_dir():
        return []
    entries = []
    for repo in sorted(cache.glob("models--*")):
        name = repo.name[len("models--") :].replace("--", "/")
        snapshot = _hf_snapshot(repo)
        if snapshot is not None:
            entries.append((name, snapshot))
    return entries


def _hf_snapshot(repo: Path) -> Path | None:
    ref = repo / "refs" / "main"
    candidates = []
    if ref.is_file():
        candidates.append(repo / "snapshots" / ref.read_text().strip())
    snapshots = repo / "snapshots"
    if snapshots.is_dir():
        candidates.extend(sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True))
    for candidate in candidates:
        folder = _model_folder(candidate)
        if folder is not None:
            return folder
    return None


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _parameter_count(folder: Path) -> int | None:
    """Summed from the safetensors headers (8-byte length, then JSON of dtype/shape per tensor)."""
    total, found = 0, False
    for weights in sorted(folder.glob("*.safetensors")):
        try:
            with open(weights, "rb") as handle:
                length = int.from_bytes(handle.read(8), "little")
                if not 0 < length <= _MAX_SAFETENSORS_HEADER:
                    continue
                header = json.loads(handle.read(length))
        except (OSError, ValueError):
            continue
        for name, tensor in header.items():
            if name != "__metadata__" and isinstance(tensor, dict):
                count = 1
                for dimension in tensor.get("shape", []):
                    count *= int(dimension)
                total += count
                found = True
    return total if found else None


def _size_on_disk(folder: Path) -> int:
    size = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file():  # follows the Hugging Face cache's links to its blobs
                size += path.stat().st_size
        except OSError:
            continue
    return size
