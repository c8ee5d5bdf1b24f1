import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from jobs import services
from jobs.models import Trainer

SAMPLE_ROWS = [
    {
        "instruction": "Classify the clause.",
        "input": f"The Supplier shall pay invoice {i} within 30 days.",
        "output": "payment_terms",
    }
    for i in range(12)
] + [
    {
        "instruction": "Classify the clause.",
        "input": f"This Agreement is governed by the laws of state {i}.",
        "output": "governing_law",
    }
    for i in range(8)
]


def jsonl(rows) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


@pytest.fixture(autouse=True)
def model_creations(monkeypatch):
    """Counts calls of the model auto-creation (the model registry's service is tested by its own app)."""
    import models_app.services

    calls: list[int] = []
    monkeypatch.setattr(models_app.services, "model_create_from_job", lambda *, job_id: calls.append(job_id))
    return calls


@pytest.fixture
def make_dataset():
    def make(owner, rows=None, filename="train.jsonl", name=""):
        upload = SimpleUploadedFile(filename, jsonl(rows or SAMPLE_ROWS))
        return services.dataset_create(owner=owner, uploaded_file=upload, name=name)

    return make


@pytest.fixture
def slow_trainer(db):
    return Trainer.objects.create(
        name="slow-test",
        description="test trainer",
        command=["{python}", "-m", "jobs.tests.slow_trainer"],
        hyperparameter_schema={
            "seconds": {"type": "number", "default": 1, "minimum": 0},
            "interval": {"type": "number", "default": 0.1, "minimum": 0.01},
            "exit_code": {"type": "integer", "default": 0},
            "ignore_sigterm": {"type": "boolean", "default": False},
            "pid_file": {"type": "string", "default": ""},
            "artifact": {"type": "boolean", "default": False},
        },
        timeout_seconds=60,
        loads_base_model=False,
    )


@pytest.fixture
def queued_job(monkeypatch):
    """A queued job whose run is not dispatched: the test runs it itself."""
    monkeypatch.setattr(services, "_dispatch_local_run", lambda job_id, queue: None)

    def make(owner, dataset, trainer, **hyperparameters):
        return services.job_create(
            owner=owner,
            name="test job",
            base_model="tiny-base",
            dataset_id=dataset.id if dataset else None,
            trainer_name=trainer.name if hasattr(trainer, "name") else trainer,
            hyperparameters_given=hyperparameters,
        )

    return make
