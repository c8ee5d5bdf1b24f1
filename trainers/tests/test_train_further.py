"""Training a registry version further, for real on the demo base: the run starts exactly where the version left
off (its adapter, loaded trainable), and preference training on a lora-sft version measures against that version,
not the raw base. Each result is the next version of the same name, with where it came from in its lineage."""

import re

import pytest

pytest.importorskip("torch", reason="the training extra (requirements-train.txt) is not installed")
pytest.importorskip("peft", reason="the training extra (requirements-train.txt) is not installed")

from django.core.files.uploadedfile import SimpleUploadedFile  # noqa: E402

from jobs import services as job_services  # noqa: E402
from jobs.models import Job  # noqa: E402
from logs_app.selectors import iter_log_text  # noqa: E402
from models_app.models import RegisteredModel  # noqa: E402
from tests.factories import jsonl, preference_records  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.django_db, pytest.mark.filterwarnings("ignore::FutureWarning")]

SFT = {"epochs": 3, "learning_rate": 0.02, "batch_size": 8, "validation_fraction": 0.25, "lora_r": 4}


@pytest.fixture
def studio(alice, demo_base, settings, monkeypatch, local_storage):
    settings.DEMO_BASE_DIR = demo_base
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    pairs = job_services.dataset_create(
        owner=alice, uploaded_file=SimpleUploadedFile("pairs.jsonl", jsonl(preference_records(32)))
    )
    return pairs


def run_job(api, capture, body) -> Job:
    with capture(execute=True):
        response = api.post("/api/v1/jobs", body, format="json")
    assert response.status_code == 201, response.json()
    job = Job.objects.get(id=response.json()["id"])
    assert job.status == Job.Status.SUCCEEDED, job.error_message
    return job


def log_of(job) -> str:
    return "".join(iter_log_text(job.id))


def test_a_chat_version_trained_further_on_more_records_and_on_preferences_starts_where_it_left_off(
    alice_api, studio, django_capture_on_commit_callbacks
):
    common = {"dataset": studio.id, "base_model": ""}  # training further: on the version's own base
    first = run_job(
        alice_api,
        django_capture_on_commit_callbacks,
        {
            **common,
            "name": "clauses",
            "base_model": "demo-base",
            "trainer": "lora-sft",
            "registered_name": "clauses",
            "hyperparameters": SFT,
        },
    )
    v1 = RegisteredModel.objects.get(job=first)

    more = {**SFT, "epochs": 1, "lora_r": 8}  # the version's shape (r=4) is kept, whatever the job says
    second = run_job(
        alice_api,
        django_capture_on_commit_callbacks,
        {**common, "name": "more", "trainer": "lora-sft", "initial_model": v1.id, "hyperparameters": more},
    )
    v2 = RegisteredModel.objects.get(job=second)

    # Same validation records (same data, seed and fraction): the second run's figure before any step is the
    # first run's last, because it starts from the very adapter the first one saved.
    before = float(re.search(r"before training: validation loss ([0-9.]+)", log_of(second)).group(1))
    assert before == pytest.approx(v1.training_metrics["final"]["eval_loss"], abs=2e-4)
    assert before < float(re.search(r"before training: validation loss ([0-9.]+)", log_of(first)).group(1))
    assert "training clauses:v1 further" in log_of(second) and "LoRA r=4 alpha=" in log_of(second)
    assert (v2.registered_name.name, v2.version) == ("clauses", 2)
    assert v2.training_metrics["run"]["initial_model"] == "clauses:v1"
    assert v2.provenance["initial_model"] == {"id": v1.id, "name": "clauses:v1"}

    preferences = {"epochs": 1, "learning_rate": 0.01, "batch_size": 8, "validation_fraction": 0.25}
    dpo = run_job(
        alice_api,
        django_capture_on_commit_callbacks,
        {**common, "name": "prefs", "trainer": "lora-dpo", "initial_model": v1.id, "hyperparameters": preferences},
    )
    v3 = RegisteredModel.objects.get(job=dpo)

    # log 2 before any step: policy and reference are both the chat version (against the raw base, the chat
    # version's own gains on the preferred answers would already count).
    assert re.search(r"before training: validation DPO loss 0\.6931", log_of(dpo))
    assert (v3.base_model, v3.version, v3.training_metrics["run"]["initial_model"]) == ("demo-base", 3, "clauses:v1")
