"""What a model's files are: kind, content type, and what the manifest says about the model as a whole.

Pure functions over manifest entries ``{path, size, sha256, crc32, content_type, kind}``;
no database, no storage.
"""

import mimetypes
import posixpath
from collections.abc import Iterable

KINDS = ("weights", "adapter", "config", "tokenizer", "metrics", "other")

# Weights barely compress: the ZIP stores them as they are.
WEIGHT_EXTENSIONS = {".safetensors", ".gguf", ".bin", ".pt", ".pth", ".onnx", ".ckpt", ".h5", ".msgpack", ".joblib"}
TEXT_EXTENSIONS = {".json", ".jsonl", ".md", ".txt", ".yaml", ".yml", ".csv", ".jinja", ".py", ".cfg", ".toml"}
_TOKENIZER_NAMES = {
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "spiece.model",
    "chat_template.jinja",
    "chat_template.json",
}
_METRICS_NAMES = {"metrics.json", "trainer_state.json", "all_results.json", "train_results.json", "eval_results.json"}
_CONTENT_TYPES = {
    ".safetensors": "application/octet-stream",
    ".gguf": "application/octet-stream",
    ".bin": "application/octet-stream",
    ".pt": "application/octet-stream",
    ".pth": "application/octet-stream",
    ".onnx": "application/octet-stream",
    ".json": "application/json",
    ".jsonl": "application/jsonl",
    ".md": "text/markdown",
    ".jinja": "text/plain",
    ".model": "application/octet-stream",
}
ADAPTERS_DIR = "lora_adapters/"
GGUF_DIR = "gguf/"


def extension(path: str) -> str:
    return posixpath.splitext(path)[1].lower()


def kind_of(path: str) -> str:
    name = posixpath.basename(path).lower()
    ext = extension(path)
    if name in _TOKENIZER_NAMES or name.startswith("tokenizer"):
        return "tokenizer"
    if name in _METRICS_NAMES:
        return "metrics"
    if ext in WEIGHT_EXTENSIONS:
        if path.startswith(ADAPTERS_DIR) or "adapter" in name:
            return "adapter"
        return "weights"
    if ext in (".json", ".yaml", ".yml") and ("config" in name or name == "modelfile"):
        return "config"
    if name == "modelfile":
        return "config"
    return "other"


def content_type_of(path: str) -> str:
    ext = extension(path)
    if ext in _CONTENT_TYPES:
        return _CONTENT_TYPES[ext]
    guessed, _ = mimetypes.guess_type(posixpath.basename(path))
    return guessed or "application/octet-stream"


def is_small_text(path: str, size: int | None) -> bool:
    """Worth deflating: text-like and small (deflate runs at ~60 MiB/s, so never on anything big)."""
    return extension(path) in TEXT_EXTENSIONS and size is not None and size <= 16 * 1024 * 1024


def manifest_entry(*, path: str, size: int, sha256: str, crc32: str, content_type: str | None = None) -> dict:
    return {
        "path": path,
        "size": int(size),
        "sha256": sha256,
        "crc32": crc32,
        "content_type": content_type or content_type_of(path),
        "kind": kind_of(path),
    }


def merge_entry(files: Iterable[dict], entry: dict) -> list[dict]:
    """The manifest with ``entry`` added, replacing a file already at the same path; sorted by path."""
    merged = {item["path"]: item for item in files}
    merged[entry["path"]] = entry
    return [merged[path] for path in sorted(merged)]


def adapter_entry(files: Iterable[dict]) -> dict | None:
    """The adapter weights a client should fetch first (PEFT's adapter_model.safetensors when present)."""
    adapters = [item for item in files if item.get("kind") == "adapter"]
    for item in adapters:
        if posixpath.basename(item["path"]) == "adapter_model.safetensors":
            return item
    return adapters[0] if adapters else None


def adapter_folder_files(files: Iterable[dict]) -> list[dict]:
    """The manifest entries of the adapter folder (``lora_adapters/``): what PEFT loads; empty when there is none."""
    return [
        item for item in files or () if isinstance(item, dict) and str(item.get("path", "")).startswith(ADAPTERS_DIR)
    ]


def has_lora_adapter(files: Iterable[dict]) -> bool:
    """Whether the manifest holds a loadable LoRA adapter: its ``adapter_config.json`` and weights."""
    folder = adapter_folder_files(files)
    return any(str(item["path"]).endswith("adapter_config.json") for item in folder) and any(
        item.get("kind") == "adapter" for item in folder
    )


def gguf_entry(files: Iterable[dict]) -> dict | None:
    ggufs = [item for item in files if extension(item["path"]) == ".gguf"]
    return ggufs[0] if ggufs else None


def summarize(files: list[dict], *, storage_path: str) -> dict:
    """Fields derived from the manifest: total size, where the adapters and GGUF live, and the model type."""
    adapter = adapter_entry(files)
    gguf = gguf_entry(files)
    if adapter:
        directory = posixpath.dirname(adapter["path"])
        lora_path = storage_path + (directory + "/" if directory else adapter["path"])
    else:
        lora_path = ""
    if adapter:
        model_type = "lora"
    elif gguf:
        model_type = "gguf"
    elif any(item.get("kind") == "weights" for item in files):
        model_type = "full"
    else:
        model_type = None
    return {
        "total_size": sum(int(item.get("size") or 0) for item in files),
        "lora_adapters_path": lora_path,
        "gguf_path": storage_path + gguf["path"] if gguf else "",
        "type": model_type,
    }
