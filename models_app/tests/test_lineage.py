"""A model's lineage (dataset, trainer, hyperparameters, base, chat template, metrics, evaluations, Ollama)
is the same in the API, on the page and inside the ZIP."""

import io
import json
import zipfile

import pytest
from django.utils import timezone

from models_app import services
from tests.factories import make_trained_job

from .conftest import adapter_files

API = "/api/v1/models"
TEMPLATE_SHA = "ab" * 32
RUN = {
    "trainer": "lora-sft",
    "job_id": "1",
    "base_model": "finetune-studio/demo-llama",
    "device": "cpu",
    "system_prompt": "",
    "chat_template_sha256": TEMPLATE_SHA,
    "hyperparameters": {"epochs": 20, "learning_rate": 0.02, "lora_r": 8, "lora_alpha": 16},
}
DATASET_SHA = "cd" * 32


@pytest.fixture
def trained_model(alice):
    from evaluations.models import Evaluation
    from jobs.models import Dataset, Trainer

    dataset = Dataset.objects.create(
        owner=alice,
        name="contracts train",
        path=f"datasets/users/{alice.id}/datasets/1-train/train.jsonl",
        file_format="jsonl",
        format="alpaca",
        task="generation",
        size_bytes=1234,
        sha256=DATASET_SHA,
        records=200,
    )
    metrics = {"final": {"loss": 5.3, "eval_accuracy": 0.9}, "history": [{"step": 1, "loss": 6.5}], "run": RUN}
    files = {**adapter_files(), "metrics.json": json.dumps(metrics).encode()}
    job = make_trained_job(alice, name="lora run", base_model="/srv/bases/demo-base", artifacts=files)
    job.trainer, _ = Trainer.objects.get_or_create(name="lora-sft")
    job.dataset = dataset
    job.hyperparameters = {"epochs": 20, "learning_rate": 0.02}
    job.save()
    model = services.model_create_from_job(job_id=job.id)
    Evaluation.objects.create(
        owner=alice,
        model=model,
        status="completed",
        test_set_path="datasets/x/test.jsonl",
        base_model_name="finetune-studio/demo-llama",
        fine_tuned_name="clauses",
        results={"significance": {"verdict": "better"}, "improvement": {"accuracy": 0.7}},
        completed_at=timezone.now(),
    )
    model.ollama_name, model.ollama_base, model.ollama_digest = "clauses", "finetune-studio/demo-llama", "ef" * 32
    model.deployed_at, model.deploy_status = timezone.now(), "deployed"
    model.save()
    return model


def check_lineage(lineage: dict, model) -> None:
    assert lineage["dataset"] == {
        "id": model.job.dataset_id,
        "name": "contracts train",
        "sha256": DATASET_SHA,
        "records": 200,
        "format": "alpaca",
        "file_format": "jsonl",
        "task": "generation",
        "size_bytes": 1234,
    }
    assert lineage["trainer"]["name"] == "lora-sft"
    assert lineage["trainer"]["job"] == {"id": model.job_id, "name": "lora run"}
    # The trainer's record (defaults filled) wins over what the job was asked.
    assert lineage["trainer"]["hyperparameters"] == RUN["hyperparameters"]
    assert lineage["base_model"] == {"name": "/srv/bases/demo-base", "identity": "finetune-studio/demo-llama"}
    assert lineage["chat_template_sha256"] == TEMPLATE_SHA
    assert lineage["metrics"] == {"loss": 5.3, "eval_accuracy": 0.9}
    assert [(e["status"], e["verdict"], e["accuracy_delta"]) for e in lineage["evaluations"]] == [
        ("completed", "better", 0.7)
    ]
    assert lineage["ollama"]["name"] == "clauses" and lineage["ollama"]["digest"] == "ef" * 32
    assert lineage["ollama"]["base"] == "finetune-studio/demo-llama"


def test_the_api_gives_the_lineage_of_a_trained_model(alice_api, trained_model):
    body = alice_api.get(f"{API}/{trained_model.id}").json()["model"]
    check_lineage(body["lineage"], trained_model)
    assert body["ollama_digest"] == "ef" * 32 and body["deploy_status"] == "deployed"


def test_the_zip_metadata_and_readme_hold_the_same_lineage(alice_api, trained_model):
    response = alice_api.get(f"{API}/{trained_model.id}/download")
    with zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))) as zipped:
        metadata = json.loads(zipped.read("metadata.json"))
        card = zipped.read("README.md").decode()
    check_lineage(metadata["lineage"], trained_model)
    assert metadata["lineage"] == alice_api.get(f"{API}/{trained_model.id}").json()["model"]["lineage"]
    assert "## Lineage" in card
    assert f"- Dataset: contracts train (#{trained_model.job.dataset_id}), 200 records, sha256 `{DATASET_SHA}`" in card
    assert f"- Chat template sha256: `{TEMPLATE_SHA}`" in card
    assert "- Ollama: `clauses` from `finetune-studio/demo-llama`, digest `" + "ef" * 32 in card
    assert "| lora_alpha | 16 |" in card and "| better |" in card


def test_the_page_shows_the_lineage(alice_browser, trained_model):
    page = alice_browser.get(f"/models/{trained_model.id}/").content.decode()
    assert f"data-lineage-dataset-sha256>{DATASET_SHA}</code>" in page
    assert f"data-lineage-template-sha256>{TEMPLATE_SHA}</code>" in page
    assert "contracts train · 200 records" in page and "finetune-studio/demo-llama" in page
    assert f'<a href="/evaluations/{trained_model.evaluations.get().id}/">' in page and "better" in page


def test_the_lineage_outlives_the_deletion_of_its_dataset(alice_api, trained_model):
    trained_model.job.dataset.delete()
    lineage = alice_api.get(f"{API}/{trained_model.id}").json()["model"]["lineage"]
    assert lineage["dataset"]["sha256"] == DATASET_SHA and lineage["dataset"]["records"] == 200


def test_a_model_registered_through_the_api_has_an_honest_empty_lineage(alice_api):
    created = alice_api.post(API, {"name": "external", "base_model": "llama3.2:3b"}, format="json").json()["model"]
    lineage = created["lineage"]
    assert lineage["dataset"] is None and lineage["trainer"] is None and lineage["chat_template_sha256"] is None
    assert lineage["base_model"] == {"name": "llama3.2:3b", "identity": None}
    assert lineage["ollama"] == {
        "name": None,
        "base": None,
        "digest": None,
        "deployed_at": None,
        "deploy_status": "idle",
        "template_family": None,
        "smoke_answer": None,
        "still_served": None,
        "drifted": None,
        "last_attempt": {"status": "idle", "error": "", "error_code": None, "target": None, "finished_at": None},
    }
    assert created["deployment"] is None and created["deploy_attempt"]["status"] == "idle"


def test_bob_sees_neither_the_model_nor_its_lineage(bob_api, trained_model):
    assert bob_api.get(f"{API}/{trained_model.id}").status_code == 404
    assert bob_api.get(f"{API}/{trained_model.id}/download").status_code == 404
