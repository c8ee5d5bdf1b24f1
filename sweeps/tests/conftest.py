import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.support.ollama_server import OllamaServer

LABELS = ["pay", "law", "term"]


def clause_records(count: int = 30) -> list[dict]:
    return [{"text": f"clause {i}: {LABELS[i % 3]} words {i}", "label": LABELS[i % 3]} for i in range(count)]


@pytest.fixture
def training_set(alice, local_storage):
    """The training (and test) set, in standalone local storage like every sweep test."""
    from jobs import services as job_services

    data = "".join(json.dumps(record) + "\n" for record in clause_records()).encode()
    return job_services.dataset_create(owner=alice, uploaded_file=SimpleUploadedFile("clauses.jsonl", data))


@pytest.fixture
def sweep_ollama(settings):
    """Ollama knowing the base (always "law") and trial models ``<name>-v<N>``: odd versions answer every
    clause right, even ones answer like the base."""
    server = OllamaServer().start()
    settings.OLLAMA_URL = server.url
    settings.EVALUATION_RETRY_BACKOFF_MS = 5
    server.add_model("llama3.2:3b", answer="law")
    truth = {record["text"]: record["label"] for record in clause_records()}

    def perfect(model, prompt):
        return next((label for text, label in truth.items() if text in prompt), "law")

    for version in range(1, 21):
        for name in ("grid", "random", "promoted"):
            server.add_model(f"{name}-v{version}", answer=perfect if version % 2 else "law")
    yield server
    server.stop()
