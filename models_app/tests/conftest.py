import hashlib
import json
import socket
from dataclasses import dataclass

import pytest

from tests.support.ollama_server import OllamaServer, _Handler, _Model, normalize_model_name

DEMO_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
ADAPTER_CONFIG = {
    "peft_type": "LORA",
    "r": 8,
    "lora_alpha": 16,
    "lora_dropout": 0.05,
    "target_modules": ["q_proj", "v_proj"],
    "base_model_name_or_path": "finetune-studio/demo-llama",
}
ADAPTER_WEIGHTS = b"safetensors-header" + bytes(range(256)) * 64


def adapter_files(*, config: dict | None = None, template: str | None = DEMO_CHAT_TEMPLATE) -> dict[str, bytes]:
    files = {
        "lora_adapters/adapter_model.safetensors": ADAPTER_WEIGHTS,
        "lora_adapters/adapter_config.json": json.dumps(config or ADAPTER_CONFIG).encode(),
        "metrics.json": b'{"final": {"loss": 1.0}}',
    }
    if template is not None:
        files["lora_adapters/chat_template.jinja"] = template.encode()
    return files


@dataclass
class _CreatedModel(_Model):
    """A created model whose digest depends on what it was created from, as Ollama's manifest digest does:
    creating a name again from other layers serves another digest under the same name."""

    manifest: str = ""

    @property
    def digest(self) -> str:
        return hashlib.sha256(f"{self.name}\n{self.manifest}".encode()).hexdigest()


class _DeployHandler(_Handler):
    """The shared Ollama test server, plus what deploy tests need: faults on blob uploads and /api/create,
    and /api/show of a created model answering with the template, system and family it was created with."""

    def do_POST(self):
        if self.path.startswith("/api/blobs/"):
            fault = self.ollama._take_fault("/api/blobs", None)
            if fault is not None and fault.kind == "status":
                self._read_body()
                self.ollama._record("POST", self.path, {"fault": fault.status})
                self._error(fault.status, fault.message)
                return
        super().do_POST()

    def _create(self, body: dict) -> None:
        fault = self.ollama._take_fault("/api/create", body.get("model"))
        if fault is not None and fault.kind == "status":
            self._error(fault.status, fault.message)
            return
        created_before = len(self.ollama.created)
        super()._create(body)
        if len(self.ollama.created) > created_before:
            base = self.ollama._model(body.get("from") or "")
            model = self.ollama._model(body["model"])
            model.family = base.family if base else model.family
            model.extra = {key: body[key] for key in ("template", "system", "parameters") if body.get(key) is not None}
            manifest = json.dumps({key: value for key, value in body.items() if key != "stream"}, sort_keys=True)
            with self.ollama._lock:
                self.ollama._models[normalize_model_name(body["model"])] = _CreatedModel(
                    **vars(model), manifest=manifest
                )


class DeployOllamaServer(OllamaServer):
    _label = "Ollama deploy"

    def _handler_class(self) -> type:
        return _DeployHandler

    def digest_of(self, name: str) -> str:
        """The digest /api/tags lists for ``name`` now."""
        return self._model(name).digest

    def requests_to(self, method: str, prefix: str) -> list:
        with self._lock:
            return [r for r in self.requests if r.method == method and r.path.startswith(prefix)]


@pytest.fixture
def deploy_ollama(settings):
    """An Ollama that knows the demo base (llama) under the identity the trainer records for it."""
    server = DeployOllamaServer().start()
    settings.OLLAMA_URL = server.url
    server.add_model("finetune-studio/demo-llama", answer="ready", family="llama")
    yield server
    server.stop()


@pytest.fixture
def closed_port_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
