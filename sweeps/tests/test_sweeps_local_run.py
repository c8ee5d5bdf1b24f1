"""A lora-sft sweep on the demo base, evaluated on `local` end to end with nothing listening at OLLAMA_URL."""

from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the training extra (requirements-train.txt) is not installed")
pytest.importorskip("peft", reason="the training extra (requirements-train.txt) is not installed")

from sweeps.models import SweepTrial  # noqa: E402
from trainers.tests.conftest import demo_base  # noqa: E402,F401  (the same tiny base the trainer tests build)

pytestmark = [pytest.mark.slow, pytest.mark.django_db]
SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "contracts"


def _upload(api, path: Path) -> dict:
    with path.open("rb") as handle:
        response = api.post("/api/v1/datasets", {"file": handle}, format="multipart")
    assert response.status_code == 201, response.content
    return response.json()


def test_a_grid_of_two_lora_sft_trials_is_trained_and_evaluated_on_local_and_ranked(
    alice_api,
    demo_base,  # noqa: F811
    settings,
    tmp_path,
    monkeypatch,
    local_storage,
    django_capture_on_commit_callbacks,  # noqa: F811
):
    settings.DEMO_BASE_DIR = demo_base
    settings.LOCAL_INFERENCE_CACHE_DIR = tmp_path / "local-inference"
    settings.OLLAMA_URL = "http://127.0.0.1:9"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    train, test = _upload(alice_api, SAMPLES / "train.jsonl"), _upload(alice_api, SAMPLES / "test.jsonl")
    body = {
        "name": "contracts grid",
        "trainer": "lora-sft",
        "dataset": train["id"],
        "base_model": "demo-base",
        "strategy": "grid",
        "search_space": {"learning_rate": [0.02, 0.03]},
        "concurrency": 2,
        "test_set_path": test["path"],
        "endpoint": "local",
        "registered_name": "contracts",
    }
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_api.post("/api/v1/sweeps", body, format="json")
    assert response.status_code == 201, response.content
    sweep = alice_api.get(f"/api/v1/sweeps/{response.json()['id']}").json()
    errors = list(SweepTrial.objects.values_list("error", "evaluation__error_message"))
    assert [t["state"] for t in sweep["trials"]] == ["evaluated"] * 2, (sweep["trials"], errors)
    ranking = sweep["ranking"]
    assert ranking["evaluated"] == 2 and ranking["best"]["better_than_base"] is True, ranking
