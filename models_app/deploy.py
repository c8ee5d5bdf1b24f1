"""Deploying a registered LoRA adapter to Ollama: checks, blob uploads, create, verification.

Ollama converts safetensors LoRA adapters itself (no GGUF step), but only on ``llama`` and ``gemma2``
bases, one adapter, PEFT tensor names and an integer ``lora_alpha``. Everything that can be checked
before uploading a byte is checked first (``plan``), so a refusal is cheap and names its reason.

The steps (``execute``), each idempotent, so a redelivered task simply runs them again:
1. digests of ``adapter_model.safetensors`` and ``adapter_config.json``, streamed from storage and
   compared with the manifest (a file changed since registration is refused, not deployed);
2. ``HEAD /api/blobs/sha256:…`` for each, ``POST`` (streamed from storage) only the missing ones;
3. ``POST /api/create`` ``{model, from, adapters, template?, parameters?, system?}``;
4. ``POST /api/show`` of the new model, one smoke chat prompt, and its digest from ``/api/tags``.

The chat template used in training is sent as an Ollama Go template when it belongs to a family we
can translate (ChatML, Llama 3, Gemma); otherwise none is sent and the model keeps its base's template
(the result says so). The URL is ``settings.OLLAMA_URL`` only, never anything from a request.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import time
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.utils.text import slugify

from finetune_studio.errors import DomainError
from finetune_studio.objects import CHUNK_SIZE, ObjectNotFound, StorageError, bucket, streamed_checksums
from inference.clients import ollama_client
from inference.ollama import (
    OllamaClient,
    OllamaError,
    OllamaModelNotFound,
    OllamaRequestRefused,
    OllamaUnavailable,
    model_name_problem,
    normalize_model_name,
)

from .models import RegisteredModel

SUPPORTED_ARCHITECTURES = frozenset({"llama", "gemma2"})
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
SMALL_FILE_MAX_BYTES = 4 * 1024 * 1024
SMOKE_PROMPT = "Reply with one short sentence: are you ready?"


class DeployRefused(DomainError):
    """A deploy that cannot go on; the message says why and what to do. ``status_code`` for the API."""

    status_code = 400
    code = "invalid"


class AdapterFilesMissing(DeployRefused):
    status_code = 409
    code = "adapter_missing"


class UnsupportedAdapter(DeployRefused):
    status_code = 400
    code = "unsupported"


class DeployConflict(DeployRefused):
    status_code = 409
    code = "conflict"


class OllamaDown(DeployRefused):
    status_code = 503
    code = "ollama_unavailable"


class OllamaFailed(DeployRefused):
    """Ollama answered, but refused or failed a step (a wrong digest, an unknown base in create, …)."""

    status_code = 502
    code = "ollama_error"


class StorageDown(DeployRefused):
    status_code = 503
    code = "storage_unavailable"


@dataclass
class AdapterFile:
    name: str  # the name Ollama's converter expects: adapter_model.safetensors / adapter_config.json
    path: str  # manifest path
    size: int
    sha256: str


@dataclass
class Plan:
    """What will be deployed, decided before any upload."""

    name: str
    base: str
    files: list[AdapterFile]
    adapter_config: dict
    architecture: str
    template: str | None
    stop: list[str]
    template_family: str
    template_sha256: str | None
    system: str
    notes: list[str] = field(default_factory=list)

    def create_payload(self, digests: dict[str, str]) -> dict:
        payload = {
            "model": self.name,
            "from": self.base,
            "adapters": {item.name: f"sha256:{digests[item.name]}" for item in self.files},
        }
        if self.template:
            payload["template"] = self.template
        if self.stop:
            payload["parameters"] = {"stop": self.stop}
        if self.system:
            payload["system"] = self.system
        return payload


def client() -> OllamaClient:
    return ollama_client(max_retries=0)


normalize = normalize_model_name


def check_ollama_name(name: str, *, what: str = "ollama_name") -> str:
    name = (name or "").strip()
    problem = model_name_problem(name)
    if problem is not None:
        raise DeployRefused(f"{what} {problem}")
    return name


def default_ollama_name(model: RegisteredModel) -> str:
    return model.ollama_name or f"{slugify(model.name)[:60].strip('-') or 'model'}-{model.id}"


def run_info(model: RegisteredModel) -> dict:
    """What the trainer recorded about the run (metrics.json ``run``), if it did."""
    run = (model.training_metrics or {}).get("run")
    return run if isinstance(run, dict) else {}


def default_base(model: RegisteredModel, adapter_config: dict | None = None) -> str:
    """The base as Ollama knows it: the last deploy's, else the registered base when it reads as an Ollama
    name, else the identity the trainer recorded (a local folder path is never an Ollama name)."""
    if model.ollama_base:
        return model.ollama_base
    candidates = [
        model.base_model,
        run_info(model).get("base_model"),
        (adapter_config or {}).get("base_model_name_or_path"),
    ]
    for candidate in candidates:
        if isinstance(candidate, str) and model_name_problem(candidate.strip()) is None:
            return candidate.strip()
    return model.base_model


# --- adapter files ---------------------------------------------------------------------------------


def _adapter_entries(model: RegisteredModel) -> tuple[dict, dict]:
    weights = [item for item in model.files if posixpath.basename(item["path"]) == ADAPTER_WEIGHTS]
    if not weights:
        raise AdapterFilesMissing(
            f"the model has no {ADAPTER_WEIGHTS}: Ollama deploys PEFT LoRA adapters "
            f"(lora_adapters/{ADAPTER_WEIGHTS} + {ADAPTER_CONFIG})"
        )
    if len(weights) > 1:
        raise UnsupportedAdapter(
            f"the model holds {len(weights)} adapters ({', '.join(item['path'] for item in weights)}); "
            "Ollama takes exactly one"
        )
    directory = posixpath.dirname(weights[0]["path"])
    config_path = posixpath.join(directory, ADAPTER_CONFIG) if directory else ADAPTER_CONFIG
    config = next((item for item in model.files if item["path"] == config_path), None)
    if config is None:
        raise AdapterFilesMissing(f"the model has {weights[0]['path']} but no {config_path} beside it")
    return weights[0], config


def undeployable_reason(model: RegisteredModel) -> str | None:
    """Why this model's files can never be deployed to Ollama (no LoRA adapter, as the example trainer's
    classifier; an adapter without its config; several adapters), or None. Reads only the manifest: the
    page asks it before offering a deploy, and the deploy itself still checks everything."""
    try:
        _adapter_entries(model)
    except DeployRefused as exc:
        return str(exc)
    return None


def _read_small(model: RegisteredModel, path: str) -> bytes:
    key = model.file_key(path)
    models_bucket = bucket("models")
    try:
        if models_bucket.size(key) > SMALL_FILE_MAX_BYTES:
            raise UnsupportedAdapter(f"{path} is larger than {SMALL_FILE_MAX_BYTES // 1024 // 1024} MiB")
        return models_bucket.read_bytes(key)
    except ObjectNotFound:
        raise AdapterFilesMissing(f"{path} is in the manifest but missing from storage") from None
    except StorageError as exc:
        raise StorageDown(f"storage failed while reading {path}: {exc}") from None


def check_adapter_config(config: dict) -> None:
    """What Ollama's converter needs from PEFT's adapter_config.json."""
    peft_type = config.get("peft_type")
    if peft_type is not None and str(peft_type).upper() != "LORA":
        raise UnsupportedAdapter(f"the adapter is {peft_type}, Ollama takes LoRA adapters only")
    alpha = config.get("lora_alpha")
    if isinstance(alpha, bool) or not isinstance(alpha, int):
        raise UnsupportedAdapter(
            f"adapter_config.json lora_alpha is {alpha!r}; Ollama's converter needs an integer (retrain with one)"
        )
    rank = config.get("r")
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        raise UnsupportedAdapter(f"adapter_config.json r is {rank!r}, not a positive integer")


def _architecture_of(config: dict) -> str | None:
    model_type = config.get("model_type")
    if isinstance(model_type, str) and model_type:
        return model_type.lower()
    return None


def local_base_architecture(model: RegisteredModel) -> str | None:
    """The base's model_type when its folder (the job's base_model) is readable from here; None otherwise."""
    job = model.job if model.job_id else None
    if job is None or not job.base_model:
        return None
    path = Path(job.base_model).expanduser()
    try:
        if not path.is_absolute() or not (path / "config.json").is_file():
            return None
        return _architecture_of(json.loads((path / "config.json").read_text()))
    except (OSError, ValueError, AttributeError):
        return None


def ollama_architecture(show: dict) -> str | None:
    """The base's architecture as Ollama's converter will see it (GGUF ``general.architecture``)."""
    info = show.get("model_info")
    if isinstance(info, dict) and isinstance(info.get("general.architecture"), str):
        return info["general.architecture"].lower()
    details = show.get("details")
    if isinstance(details, dict) and isinstance(details.get("family"), str) and details["family"]:
        return details["family"].lower()
    return None


# --- chat template -----------------------------------------------------------------------------------

_TEMPLATES = {
    "chatml": (
        "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n",
        ["<|im_end|>"],
    ),
    "llama3": (
        "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>"
        "{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n",
        ["<|eot_id|>"],
    ),
    # Gemma has no system role: a system message is shown as a user turn, as Gemma's own template does.
    "gemma": (
        '{{- range .Messages }}<start_of_turn>{{ if eq .Role "assistant" }}model{{ else }}user{{ end }}\n'
        "{{ .Content }}<end_of_turn>\n{{ end }}<start_of_turn>model\n",
        ["<end_of_turn>"],
    ),
}


def template_family(chat_template: str) -> str | None:
    if "<|im_start|>" in chat_template:
        return "chatml"
    if "<|start_header_id|>" in chat_template:
        return "llama3"
    if "<start_of_turn>" in chat_template:
        return "gemma"
    return None


def ollama_template(chat_template: str | None) -> tuple[str | None, list[str], str]:
    """(Go template, stop tokens, family) for a Jinja chat template; (None, [], why) when we cannot translate it.

    Jinja cannot be translated in general; the three families below cover the demo base (ChatML), Llama 3
    and Gemma. Each renders every message then opens the assistant turn, exactly like the Jinja template
    with ``add_generation_prompt`` — the prompt the trainer computed the loss on.
    """
    if not chat_template:
        return None, [], "none recorded: the base's template is kept"
    family = template_family(chat_template)
    if family is None:
        return None, [], "unrecognised: the base's template is kept"
    template, stop = _TEMPLATES[family]
    return template, stop, family


def _renders_tools(chat_template: str) -> bool:
    """Whether a Jinja chat template renders tool definitions or calls (the variables transformers passes)."""
    return any(name in chat_template for name in ("tools", "tool_calls"))


def _training_chat_template(model: RegisteredModel, adapter_dir: str) -> tuple[str | None, str | None]:
    """(template text, its path) saved with the adapter: chat_template.jinja, else tokenizer_config.json's."""
    paths = {item["path"] for item in model.files}
    prefix = f"{adapter_dir}/" if adapter_dir else ""
    jinja = prefix + "chat_template.jinja"
    if jinja in paths:
        return _read_small(model, jinja).decode("utf-8", "replace"), jinja
    tokenizer_config = prefix + "tokenizer_config.json"
    if tokenizer_config in paths:
        try:
            value = json.loads(_read_small(model, tokenizer_config)).get("chat_template")
        except (ValueError, AttributeError):
            return None, None
        if isinstance(value, list):  # [{"name": "default", "template": …}, …]
            value = next((item.get("template") for item in value if item.get("name") == "default"), None)
        if isinstance(value, str) and value:
            return value, tokenizer_config
    return None, None


# --- planning and execution --------------------------------------------------------------------------


def _ollama_call(function, *args, **kwargs):
    """Ollama's errors as deploy refusals: unreachable → 503 naming the URL, the rest → 502 with Ollama's words."""
    try:
        return function(*args, **kwargs)
    except OllamaUnavailable as exc:
        raise OllamaDown(str(exc)) from None
    except (OllamaModelNotFound, OllamaRequestRefused, OllamaError) as exc:
        raise OllamaFailed(str(exc)) from None


def plan(model: RegisteredModel, *, name: str | None, base: str | None, ollama: OllamaClient) -> Plan:
    """Every check that needs no upload: adapter files and config, template, Ollama reachable, base known there
    and of a supported architecture, the name not someone else's. Raises DeployRefused."""
    if model.status != RegisteredModel.Status.READY:
        raise DeployConflict(f"the model is {model.status}; only a ready model can be deployed (mark it ready first)")
    weights, config_entry = _adapter_entries(model)
    try:
        adapter_config = json.loads(_read_small(model, config_entry["path"]))
    except ValueError as exc:
        raise UnsupportedAdapter(f"{config_entry['path']} is not valid JSON: {exc}") from None
    if not isinstance(adapter_config, dict):
        raise UnsupportedAdapter(f"{config_entry['path']} is not a JSON object")
    check_adapter_config(adapter_config)

    name = check_ollama_name(name or default_ollama_name(model))
    base = check_ollama_name(base or default_base(model, adapter_config), what="base")
    if normalize(name) == normalize(base):
        raise DeployRefused(f"ollama_name {name!r} is the base model's name: deploying would replace the base")
    notes = []
    local_architecture = local_base_architecture(model)
    if local_architecture and local_architecture not in SUPPORTED_ARCHITECTURES:
        raise UnsupportedAdapter(_unsupported(local_architecture, "the base's config.json"))

    show = _ollama_call(_show_base, ollama, base)
    architecture = ollama_architecture(show) or local_architecture
    if architecture is None:
        notes.append(f"Ollama did not say the architecture of {base}; its converter will check it")
    elif architecture not in SUPPORTED_ARCHITECTURES:
        raise UnsupportedAdapter(_unsupported(architecture, f"Ollama's {base}"))

    existing = {normalize(item["name"]) for item in _ollama_call(ollama.list_models)}
    ours = {normalize(value) for value in (model.ollama_name, (model.deploy_details or {}).get("target")) if value}
    if normalize(name) in existing and normalize(name) not in ours:
        raise DeployConflict(
            f"Ollama at {ollama.base_url} already has a model named {name!r} that this model did not create; "
            "choose another ollama_name"
        )

    adapter_dir = posixpath.dirname(weights["path"])
    chat_template, template_path = _training_chat_template(model, adapter_dir)
    template, stop, family = ollama_template(chat_template)
    template_sha256 = hashlib.sha256(chat_template.encode()).hexdigest() if chat_template else None
    recorded = run_info(model).get("chat_template_sha256")
    if template_sha256 and recorded and recorded != template_sha256:
        notes.append(f"{template_path} differs from the template the trainer recorded (sha256 {recorded[:12]}…)")
    if template is None:
        notes.append(f"chat template {family}")
    elif _renders_tools(chat_template):
        notes.append(
            f"the {family} template sent to Ollama renders messages only: the training template's tool definitions "
            "and calls are not translated, so tool calling through this Ollama model is not what was trained "
            "(evaluate tool calling on the local endpoint)"
        )
    return Plan(
        name=name,
        base=base,
        files=[
            AdapterFile(ADAPTER_WEIGHTS, weights["path"], int(weights["size"]), weights.get("sha256") or ""),
            AdapterFile(
                ADAPTER_CONFIG, config_entry["path"], int(config_entry["size"]), config_entry.get("sha256") or ""
            ),
        ],
        adapter_config=adapter_config,
        architecture=architecture or "unknown",
        template=template,
        stop=stop,
        template_family=family,
        template_sha256=template_sha256,
        system=str(run_info(model).get("system_prompt") or ""),
        notes=notes,
    )


def _show_base(ollama: OllamaClient, base: str) -> dict:
    try:
        return ollama.show(base)
    except OllamaModelNotFound:
        raise DeployRefused(
            f"the base model {base!r} is not in Ollama at {ollama.base_url}: pull or create it there first, "
            "or pass `base` with the name Ollama knows it by"
        ) from None


def _unsupported(architecture: str, source: str) -> str:
    return (
        f"unsupported base architecture {architecture!r} ({source}): Ollama converts LoRA adapters only for "
        f"{' and '.join(sorted(SUPPORTED_ARCHITECTURES))} bases"
    )


def _streamed_digest(key: str) -> tuple[str, int]:
    sums = streamed_checksums(bucket("models").iter_chunks(key, chunk_size=CHUNK_SIZE))
    return sums.sha256, sums.size


def upload_chunks(key: str):
    """The bytes sent to Ollama for one blob, straight from storage (bounded memory whatever the size)."""
    return bucket("models").iter_chunks(key, chunk_size=CHUNK_SIZE)


def execute(model: RegisteredModel, deploy_plan: Plan, *, ollama: OllamaClient) -> dict:
    """Upload what Ollama lacks, create, verify. Returns what to record; raises DeployRefused."""
    digests, sizes = {}, {}
    for item in deploy_plan.files:
        key = model.file_key(item.path)
        try:
            digests[item.name], sizes[item.name] = _streamed_digest(key)
        except ObjectNotFound:
            raise AdapterFilesMissing(f"{item.path} is in the manifest but missing from storage") from None
        except StorageError as exc:
            raise StorageDown(f"storage failed while reading {item.path}: {exc}") from None
        if item.sha256 and item.sha256 != digests[item.name]:
            raise DeployConflict(
                f"{item.path} changed in storage since it was registered (sha256 {digests[item.name][:12]}… "
                f"instead of {item.sha256[:12]}…): refusing to deploy a file nobody checked"
            )

    uploaded, reused = [], []
    for item in deploy_plan.files:
        digest = f"sha256:{digests[item.name]}"
        if _ollama_call(ollama.blob_exists, digest):
            reused.append(item.name)
            continue
        try:
            _ollama_call(ollama.blob_upload, digest, upload_chunks(model.file_key(item.path)), size=sizes[item.name])
        except OllamaFailed as exc:
            raise OllamaFailed(f"{exc} — the bytes sent did not match {digest} ({item.path} changed while uploading?)")
        except StorageError as exc:
            raise StorageDown(f"storage failed while uploading {item.path}: {exc}") from None
        uploaded.append(item.name)

    payload = deploy_plan.create_payload(digests)
    _ollama_call(ollama.create, payload, timeout=settings.MODEL_DEPLOY_CREATE_TIMEOUT)
    try:
        show = _ollama_call(ollama.show, deploy_plan.name)
    except OllamaFailed as exc:
        raise OllamaFailed(f"Ollama said it created {deploy_plan.name!r} but cannot show it: {exc}") from None
    started = time.perf_counter()
    try:
        answer = _ollama_call(
            ollama.chat,
            model=deploy_plan.name,
            prompt=SMOKE_PROMPT,
            options={"temperature": 0, "num_predict": 32, "seed": 0},
        )
    except DeployRefused as exc:
        raise type(exc)(f"{deploy_plan.name!r} was created but failed its smoke prompt: {exc}") from None
    listed = {normalize(item["name"]): item for item in _ollama_call(ollama.list_models)}
    entry = listed.get(normalize(deploy_plan.name))
    if entry is None or not entry.get("digest"):
        raise OllamaFailed(f"{deploy_plan.name!r} answered but /api/tags does not list it with a digest")
    return {
        "digest": str(entry["digest"]),
        "details": {
            "target": deploy_plan.name,
            "base": deploy_plan.base,
            "architecture": deploy_plan.architecture,
            "blobs": {name: f"sha256:{digest}" for name, digest in digests.items()},
            "uploaded": uploaded,
            "reused": reused,
            "template": {
                "family": deploy_plan.template_family,
                "sent": deploy_plan.template is not None,
                "training_sha256": deploy_plan.template_sha256,
                "applied": deploy_plan.template is None or show.get("template") == deploy_plan.template,
            },
            "system": deploy_plan.system,
            "show": {key: show.get(key) for key in ("details", "capabilities") if key in show},
            "smoke": {
                "prompt": SMOKE_PROMPT,
                "answer": answer.content[:500],
                "latency_ms": round((time.perf_counter() - started) * 1000, 1),
            },
            "notes": deploy_plan.notes,
        },
    }
