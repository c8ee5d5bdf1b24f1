import json

import pytest

from finetune_studio.objects import bucket
from tests.support.ollama_server import OllamaServer, answer_from_mapping

LABELS = ["positive", "negative", "neutral"]


def sample_records(count: int = 12) -> list[dict]:
    return [{"text": f"Example {i}: the clause reads {'xyz'[i % 3]}{i}.", "label": LABELS[i % 3]} for i in range(count)]


@pytest.fixture
def ollama_server(settings):
    """The Ollama-speaking test server, with settings.OLLAMA_URL pointing at it and quick retries."""
    server = OllamaServer().start()
    settings.OLLAMA_URL = server.url
    settings.EVALUATION_RETRY_BACKOFF_MS = 5
    yield server
    server.stop()


@pytest.fixture
def make_dataset(db):
    """``make_dataset(owner, records)`` → a Dataset row and its object in the datasets bucket."""
    from jobs.models import Dataset

    counter = iter(range(1, 1000))

    def make(owner, records=None, *, filename="test.jsonl", raw: bytes | None = None, labels=None):
        records = sample_records() if records is None else records
        number = next(counter)
        path = f"datasets/users/{owner.id}/datasets/0000000{number}-test/{filename}"
        data = raw if raw is not None else "\n".join(json.dumps(record) for record in records).encode()
        bucket("datasets").put_bytes(path.removeprefix("datasets/"), data)
        found_labels = sorted({r["label"] for r in records if isinstance(r, dict) and "label" in r})
        return Dataset.objects.create(
            owner=owner,
            name=f"test set {number}",
            path=path,
            original_filename=filename,
            format=filename.rsplit(".", 1)[-1],
            size_bytes=len(data),
            records=len(records),
            labels=found_labels if labels is None else labels,
        )

    return make


@pytest.fixture
def make_model(db):
    from models_app.models import RegisteredModel

    def make(owner, name="contracts-ft"):
        return RegisteredModel.objects.create(owner=owner, name=name, base_model="llama3.2:3b", status="ready")

    return make


@pytest.fixture
def trained_ollama(ollama_server):
    """Ollama knowing a base model (always "neutral") and a perfect fine-tune of sample_records()."""
    ollama_server.add_model("llama3.2:3b", answer="neutral")
    ollama_server.add_model("contracts-ft", answer=perfect_answers())
    return ollama_server


def perfect_answers():
    return answer_from_mapping({record["text"]: record["label"] for record in sample_records(200)}, default="neutral")


@pytest.fixture
def best_listed_last(alice, alice_api, make_model, make_dataset, trained_ollama, django_capture_on_commit_callbacks):
    """The reproduction of defect 11: the first fine-tuned name answers like the base, the second is perfect."""
    trained_ollama.add_model("probe-base:latest", answer="neutral")
    trained_ollama.add_model("probe-tuned", answer=perfect_answers())
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_api.post(
            f"/api/v1/models/{make_model(alice).id}/evaluate",
            {
                "test_set_path": make_dataset(alice).path,
                "base_model_name": "llama3.2:3b",
                "fine_tuned_names": ["probe-base:latest", "probe-tuned"],
            },
            format="json",
        )
    from evaluations.models import Evaluation

    evaluation = Evaluation.objects.get(id=response.json()["evaluation_id"])
    assert evaluation.status == "completed", evaluation.error_message
    return evaluation
