"""The whole loop in a standalone studio with no Ollama: upload → lora-sft on demo-base → evaluate on `local`.

Nothing listens at OLLAMA_URL here (settings_test points it at port 9): every answer comes from the studio's
own engine, the fine-tuned candidate being the registry's adapter downloaded to the worker's cache.
"""

import json
import socket
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

pytest.importorskip("torch", reason="the training extra (requirements-train.txt) is not installed")
pytest.importorskip("transformers", reason="the training extra (requirements-train.txt) is not installed")
pytest.importorskip("peft", reason="the training extra (requirements-train.txt) is not installed")

from evaluations.local_models import chat_template_sha256  # noqa: E402
from evaluations.models import Evaluation, Prediction  # noqa: E402
from jobs.models import Job  # noqa: E402
from models_app.models import RegisteredModel  # noqa: E402
from trainers.tests.conftest import demo_base  # noqa: E402,F401  (the same tiny base the trainer tests build)

pytestmark = [pytest.mark.slow, pytest.mark.django_db]

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "contracts"


def _nothing_listens_at(url: str) -> bool:
    parsed = urlparse(url)
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((parsed.hostname, parsed.port or 80)) != 0


def _upload(api, path: Path) -> dict:
    with path.open("rb") as handle:
        response = api.post("/api/v1/datasets", {"file": handle}, format="multipart")
    assert response.status_code == 201, response.content
    return response.json()


@pytest.fixture
def trained_model(alice, alice_api, demo_base, settings, tmp_path, monkeypatch, django_capture_on_commit_callbacks):  # noqa: F811
    """The sample's train set uploaded, a lora-sft job on demo-base with no hyperparameters (its preset), its model."""
    settings.DEMO_BASE_DIR = demo_base
    settings.LOCAL_INFERENCE_CACHE_DIR = tmp_path / "local-inference"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # passed to the trainer: threads only slow the tiny model down
    assert _nothing_listens_at(settings.OLLAMA_URL)
    train = _upload(alice_api, SAMPLES / "train.jsonl")
    started = time.monotonic()
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_api.post(
            "/api/v1/jobs",
            {
                "name": "contracts on the demo base",
                "base_model": "demo-base",
                "dataset": train["id"],
                "trainer": "lora-sft",
            },
            format="json",
        )
    assert response.status_code == 201, response.content
    job = Job.objects.get(id=response.json()["id"])
    assert job.status == Job.Status.SUCCEEDED, job.error_message
    model = RegisteredModel.objects.get(job=job)
    model.training_seconds = time.monotonic() - started
    return model


def test_a_fresh_studio_trains_on_the_sample_and_evaluates_on_the_local_endpoint_with_no_ollama(
    alice, alice_api, alice_browser, trained_model, django_capture_on_commit_callbacks
):
    model = trained_model
    test_set = _upload(alice_api, SAMPLES / "test.jsonl")

    # The model page's Evaluate opens the form on the local endpoint with the model's own adapter and base.
    form = alice_browser.get(f"/evaluations/new/?model={model.id}")
    assert form.status_code == 200
    page = form.content.decode()
    assert '<option value="local" selected' in page
    assert 'id="id_base_model_name" value="demo-base"' in page

    started = time.monotonic()
    with django_capture_on_commit_callbacks(execute=True):
        posted = alice_browser.post(
            "/evaluations/new/",
            {
                "model": model.id,
                "test_set_path": test_set["path"],
                "base_endpoint": "local",
                "fine_tuned_endpoint": "local",
                "base_model_name": "demo-base",
                "fine_tuned_name": "",
                "concurrency": 4,
                # The sample is instruction/input/output data (a generation set); its outputs are five labels.
                "task": "classification",
            },
        )
    evaluation_seconds = time.monotonic() - started
    assert posted.status_code == 302, posted.content.decode()[-2000:]
    evaluation = Evaluation.objects.get(model=model)
    assert evaluation.status == "completed", evaluation.error_message
    assert (evaluation.base_endpoint, evaluation.fine_tuned_endpoint) == ("local", "local")
    assert evaluation.candidates == ["demo-base", model.name]
    assert [plan["source"] for plan in evaluation.candidate_plans] == ["named", "registry_adapter"]
    # Asked as it was taught: the record's own text after the training system prompt, not the classification
    # template, for both candidates.
    assert evaluation.config["prompt_style"] == "as_trained"
    assert evaluation.config["chat_template_sha256"] == model.training_metrics["run"]["chat_template_sha256"]

    results = evaluation.results
    records = test_set["records"]
    assert Prediction.objects.filter(evaluation=evaluation).count() == 2 * records
    base, tuned = results["base"]["accuracy"], results["fine_tuned"]["accuracy"]
    # Five labels (chance 0.2): the tiny base answers none; the adapter most (≈ 0.73 on the held-out sample here).
    assert tuned >= 0.6, results["fine_tuned"]
    assert tuned - base >= 0.4, (base, tuned)
    assert results["significance"]["verdict"] == "significant improvement"
    assert len(evaluation.examples) > 0

    detail = alice_browser.get(f"/evaluations/{evaluation.id}/").content.decode()
    assert "significant improvement" in detail and "demo-base" in detail
    assert "this model's adapter on demo-base" in detail and 'data-endpoint="local"' in detail

    # A second evaluation of the same adapter reads it from this worker's cache: one folder, not two.
    with django_capture_on_commit_callbacks(execute=True):
        again = alice_api.post(
            f"/api/v1/models/{model.id}/evaluate",
            {"test_set_path": test_set["path"], "endpoint": "local", "max_examples": 5, "task": "classification"},
            format="json",
        )
    assert again.status_code == 202, again.content
    assert Evaluation.objects.get(id=again.json()["evaluation_id"]).status == "completed"
    from django.conf import settings

    cached = [path for path in Path(settings.LOCAL_INFERENCE_CACHE_DIR).iterdir() if not path.name.startswith(".")]
    assert len(cached) == 1 and (cached[0] / "adapter_config.json").is_file()
    # The template the adapter carries is the one its lineage says it was trained with (checked before asking).
    assert chat_template_sha256(cached[0]) == model.training_metrics["run"]["chat_template_sha256"]
    print(
        "LOOP",
        json.dumps(
            {
                "train_records": model.training_metrics["run"]["train_records"],
                "test_records": records,
                "training_seconds": round(model.training_seconds, 1),
                "evaluation_seconds": round(evaluation_seconds, 1),
                "base_accuracy": base,
                "fine_tuned_accuracy": tuned,
                "mcnemar_p": results["significance"]["mcnemar"]["p_value"],
                "summary": results["significance"]["summary"],
            }
        ),
    )


def _registry_model(owner, files: dict[str, bytes], *, base_model="demo-base"):
    """A model whose adapter folder holds ``files`` in the models bucket, with a manifest of their sha256s."""
    import hashlib
    import zlib

    from finetune_studio.objects import bucket
    from models_app import artifacts

    model = RegisteredModel.objects.create(owner=owner, name="hand-made adapter", base_model=base_model, status="ready")
    model.storage_path = f"users/{owner.id}/models/{model.id}/"
    manifest = []
    for path, data in files.items():
        bucket("models").put_bytes(model.storage_path + path, data)
        manifest.append(
            artifacts.manifest_entry(
                path=path, size=len(data), sha256=hashlib.sha256(data).hexdigest(), crc32=f"{zlib.crc32(data):08x}"
            )
        )
    model.files = manifest
    model.save()
    return model


@pytest.mark.parametrize(
    "files, damage, reason",
    [
        (
            {"lora_adapters/adapter_config.json": b"{not json", "lora_adapters/adapter_model.safetensors": b"\0" * 64},
            None,
            "cannot load",
        ),
        (
            {"lora_adapters/adapter_config.json": b"{}", "lora_adapters/adapter_model.safetensors": b"\0" * 64},
            "lora_adapters/adapter_model.safetensors",
            "does not match its sha256 in the manifest",
        ),
    ],
)
def test_a_broken_adapter_fails_the_evaluation_with_the_reason(
    files,
    damage,
    reason,
    alice,
    alice_api,
    demo_base,  # noqa: F811
    settings,
    tmp_path,
    make_test_set,
    django_capture_on_commit_callbacks,
):
    from finetune_studio.objects import bucket

    settings.DEMO_BASE_DIR = demo_base
    settings.LOCAL_INFERENCE_CACHE_DIR = tmp_path / "local-inference"
    model = _registry_model(alice, files)
    if damage:
        bucket("models").put_bytes(model.storage_path + damage, b"changed in storage behind the manifest's back")
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_api.post(
            f"/api/v1/models/{model.id}/evaluate",
            {"test_set_path": make_test_set(alice).path, "endpoint": "local"},
            format="json",
        )
    assert response.status_code == 202, response.content
    evaluation = Evaluation.objects.get(id=response.json()["evaluation_id"])
    assert evaluation.status == "failed"
    assert reason in evaluation.error_message, evaluation.error_message
    # Named, never by the worker's folders.
    assert str(tmp_path) not in evaluation.error_message and str(demo_base) not in evaluation.error_message


def test_an_adapter_whose_chat_template_is_not_the_trained_one_is_not_asked(
    alice,
    alice_api,
    demo_base,  # noqa: F811
    settings,
    tmp_path,
    make_test_set,
    django_capture_on_commit_callbacks,
):
    settings.DEMO_BASE_DIR = demo_base
    settings.LOCAL_INFERENCE_CACHE_DIR = tmp_path / "local-inference"
    files = {
        "lora_adapters/adapter_config.json": b"{}",
        "lora_adapters/adapter_model.safetensors": b"\0" * 64,
        "lora_adapters/chat_template.jinja": b"{{ messages[0]['content'] }}",
    }
    model = _registry_model(alice, files)
    model.training_metrics = {"run": {"trainer": "lora-sft", "system_prompt": "", "chat_template_sha256": "0" * 64}}
    model.save()
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_api.post(
            f"/api/v1/models/{model.id}/evaluate",
            {"test_set_path": make_test_set(alice).path, "endpoint": "local"},
            format="json",
        )
    evaluation = Evaluation.objects.get(id=response.json()["evaluation_id"])
    assert evaluation.status == "failed"
    assert "carries a chat template" in evaluation.error_message and "other than the one it was trained with" in (
        evaluation.error_message
    )
    assert not Prediction.objects.filter(evaluation=evaluation).exists()
