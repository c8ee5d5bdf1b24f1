"""A lora-sft job through the local job runner ends with a model in the registry holding the adapter."""

import json

import pytest

pytest.importorskip("torch", reason="the training extra (requirements-train.txt) is not installed")
pytest.importorskip("transformers", reason="the training extra (requirements-train.txt) is not installed")
pytest.importorskip("peft", reason="the training extra (requirements-train.txt) is not installed")

from django.core.files.uploadedfile import SimpleUploadedFile  # noqa: E402

from jobs import services as job_services  # noqa: E402
from jobs.models import Job  # noqa: E402
from logs_app.models import LogEntry  # noqa: E402
from models_app.lineage import model_lineage  # noqa: E402
from models_app.models import RegisteredModel  # noqa: E402
from tests.factories import tool_records  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.mark.django_db
def test_a_lora_sft_job_ends_with_a_registered_model_holding_the_adapter_and_loss_history(
    alice, alice_api, demo_base, clause_dataset, django_capture_on_commit_callbacks, monkeypatch, settings
):
    settings.DEMO_BASE_DIR = demo_base
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # passed through to the trainer: threads only slow the tiny model
    dataset = job_services.dataset_create(
        owner=alice, uploaded_file=SimpleUploadedFile("clauses.jsonl", clause_dataset.read_bytes())
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_api.post(
            "/api/v1/jobs",
            {
                "name": "lora on the demo base",
                "base_model": "demo-base",
                "dataset": dataset.id,
                "trainer": "lora-sft",
                "hyperparameters": {
                    "epochs": 2,
                    "learning_rate": 1e-2,
                    "batch_size": 16,
                    "logging_steps": 2,
                    "validation_fraction": 0.2,
                },
            },
            format="json",
        )
    assert response.status_code == 201, response.json()
    job = Job.objects.get(id=response.json()["id"])
    assert job.status == Job.Status.SUCCEEDED, job.error_message
    model = RegisteredModel.objects.get(job=job)
    assert model.owner == alice and model.base_model == "demo-base"
    files = {entry["path"]: entry for entry in model.files}
    for path in ("lora_adapters/adapter_model.safetensors", "lora_adapters/adapter_config.json", "metrics.json"):
        assert path in files and files[path]["size"] > 0 and len(files[path]["sha256"]) == 64
    assert "lora_adapters/chat_template.jinja" in files
    # The worker's folder of the base never reaches the user: not in the log, the metrics or the lineage.
    log_text = " ".join(job.log_entries.values_list("message", flat=True))
    assert "base model demo-base" in log_text
    shown = log_text + json.dumps(model.training_metrics) + json.dumps(model_lineage(model), default=str)
    assert str(demo_base) not in shown
    assert alice_api.get(f"/api/v1/models/{model.id}").status_code == 200
    history = model.training_metrics["loss_history"]
    assert [point["step"] for point in history] == list(range(2, 21, 2))  # 160 records / 16 = 10 steps per epoch
    assert [point["epoch"] for point in model.training_metrics["eval"]] == [1, 2]
    # The metrics lines streamed through the logs pipeline drove the job's progress (page, chart, ETA).
    job.refresh_from_db()
    assert job.progress["step"] == job.progress["total_steps"] == 20, job.progress


@pytest.mark.django_db
def test_a_worker_given_two_gpus_runs_lora_sft_under_torchrun_and_registers_one_model(
    alice, alice_api, demo_base, clause_dataset, django_capture_on_commit_callbacks, monkeypatch, settings
):
    settings.DEMO_BASE_DIR = demo_base
    """On the CPU the two processes use gloo: the same launch a two-GPU worker makes, minus the GPUs."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # the worker's GPUs, passed through to the trainer
    dataset = job_services.dataset_create(
        owner=alice, uploaded_file=SimpleUploadedFile("clauses.jsonl", clause_dataset.read_bytes())
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_api.post(
            "/api/v1/jobs",
            {
                "name": "lora on two processes",
                "base_model": "demo-base",
                "dataset": dataset.id,
                "trainer": "lora-sft",
                "hyperparameters": {"epochs": 1, "batch_size": 16, "logging_steps": 2, "validation_fraction": 0.2},
            },
            format="json",
        )
    assert response.status_code == 201, response.json()
    job = Job.objects.get(id=response.json()["id"])
    assert job.status == Job.Status.SUCCEEDED, job.error_message
    messages = list(job.log_entries.values_list("message", flat=True))
    [start] = [m for m in messages if m.startswith("starting trainer lora-sft")]
    assert "-m torch.distributed.run --standalone --nproc-per-node=2 -m trainers.lora_sft" in start
    assert len([m for m in messages if "setup: " in m]) == 1  # only rank 0 logs
    assert job.metrics["run"]["processes"] == 2
    assert RegisteredModel.objects.filter(job=job).count() == 1


@pytest.mark.django_db
def test_a_lora_sft_job_on_tool_calls_with_a_base_whose_template_drops_them_fails_with_the_reason(
    alice, alice_api, demo_base, django_capture_on_commit_callbacks, monkeypatch, settings, tmp_path
):
    """A demo base built before its template rendered tools (var/demo-base of an older install)."""
    import shutil

    from trainers.lora_sft.chat import FALLBACK_CHAT_TEMPLATE

    old_base = shutil.copytree(demo_base, tmp_path / "demo-base")
    (old_base / "chat_template.jinja").write_text("{{ bos_token }}" + FALLBACK_CHAT_TEMPLATE)
    settings.DEMO_BASE_DIR = old_base
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    rows = "".join(json.dumps(row) + "\n" for row in tool_records(4)).encode()
    dataset = job_services.dataset_create(owner=alice, uploaded_file=SimpleUploadedFile("tools.jsonl", rows))
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_api.post(
            "/api/v1/jobs",
            {"name": "tools", "base_model": "demo-base", "dataset": dataset.id, "trainer": "lora-sft"},
            format="json",
        )
    assert response.status_code == 201, response.json()
    job = Job.objects.get(id=response.json()["id"])
    assert (job.status, job.exit_code) == (Job.Status.FAILED, 2)
    assert job.error_message == (
        "trainer exited with code 2: cannot render the records with the chat template: the chat template does not "
        "render the record's tools (get_weather not in its rendering): tool-calling records need a base whose "
        "template supports tools (a demo base built before its template did is rebuilt with "
        "`manage.py build_demo_base --force`)"
    )
    assert not RegisteredModel.objects.filter(job=job).exists()
    # The reason is logged once by the trainer (an ERROR line on stderr) and once in the runner's closing line.
    reasons = LogEntry.objects.filter(job=job, message__contains="does not render the record's tools")
    assert sorted(reasons.values_list("source", "level")) == [("runner", "ERROR"), ("stderr", "ERROR")]
