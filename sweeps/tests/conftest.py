import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.support.ollama_server import OllamaServer, answer_from_mapping

LABELS = ["pay", "law", "term"]
GRID = {"epochs": [1, 2], "learning_rate": [0.1, 0.5]}


def sweep_body(dataset, *, name: str, **overrides) -> dict:
    """A sweep request: a grid of four `example` trials on ``dataset``, tested on it too, versions of ``name``."""
    body = {
        "name": name,
        "trainer": "example",
        "dataset": dataset.id,
        "base_model": "llama3.2:3b",
        "strategy": "grid",
        "search_space": GRID,
        "concurrency": 2,
        "test_set_path": dataset.path,
        "registered_name": name,
    }
    return {**body, **overrides}


ANSWERS = [
    "Payment is due within thirty days of the invoice.",
    "Either party may terminate with ninety days notice.",
    "The laws of Norway govern this agreement.",
]
BASE_ANSWER = "No idea."


def clause_records(count: int = 30) -> list[dict]:
    return [{"text": f"clause {i}: {LABELS[i % 3]} words {i}", "label": LABELS[i % 3]} for i in range(count)]


def instruction_records(count: int = 12) -> list[dict]:
    """Alpaca records (a generation set): what does clause <i> say, answered by one of three sentences."""
    return [
        {"instruction": f"What does contract clause number {i} say?", "input": "", "output": ANSWERS[i % 3]}
        for i in range(count)
    ]


@pytest.fixture
def training_set(alice, local_storage):
    """The training (and test) set, in standalone local storage like every sweep test."""
    from jobs import services as job_services

    data = "".join(json.dumps(record) + "\n" for record in clause_records()).encode()
    return job_services.dataset_create(owner=alice, uploaded_file=SimpleUploadedFile("clauses.jsonl", data))


@pytest.fixture
def instruction_set(alice, local_storage):
    """A generation training (and test) set of instruction/output records."""
    from jobs import services as job_services

    data = "".join(json.dumps(record) + "\n" for record in instruction_records()).encode()
    return job_services.dataset_create(owner=alice, uploaded_file=SimpleUploadedFile("answers.jsonl", data))


@pytest.fixture
def generation_ollama(settings):
    """Ollama knowing the base and trial models ``chat-v<N>`` for instruction_set: the base answers only one
    question in three (``BASE_ANSWER`` otherwise); odd versions answer every question with its reference, even
    ones like the base."""
    server = OllamaServer().start()
    settings.OLLAMA_URL = server.url
    settings.EVALUATION_RETRY_BACKOFF_MS = 5
    records = instruction_records()
    truth = {record["instruction"]: record["output"] for record in records}
    base_knows = {record["instruction"]: record["output"] for i, record in enumerate(records) if i % 3 == 0}
    server.add_model("llama3.2:3b", answer=answer_from_mapping(base_knows, default=BASE_ANSWER))
    for version in range(1, 21):
        perfect = version % 2
        answer = answer_from_mapping(truth if perfect else base_knows, default=BASE_ANSWER)
        server.add_model(f"chat-v{version}", answer=answer)
    yield server
    server.stop()


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
