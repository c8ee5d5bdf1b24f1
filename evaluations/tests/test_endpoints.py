"""Evaluations name endpoints, per candidate: the operator's servers by name, never a user's URL."""

import json
from pathlib import Path

import pytest

from evaluations.models import Evaluation
from inference.endpoints import parse_endpoint_settings
from tests.support.ollama_server import OllamaServer, answer_from_mapping
from tests.support.openai_server import OpenAIServer

from .conftest import sample_records
from .test_api import evaluate

pytestmark = pytest.mark.django_db

KEY = "sk-evaluations-test-key-0123456789"


@pytest.fixture
def vllm(settings, monkeypatch):
    """An OpenAI-compatible server wanting a key, configured by the operator in INFERENCE_ENDPOINTS as "vllm"."""
    server = OpenAIServer(api_key=KEY).start()
    server.add_model("llama-3-base", answer="neutral")
    mapping = {record["text"]: record["label"] for record in sample_records(200)}
    server.add_model("contracts-ft", answer=answer_from_mapping(mapping, default="neutral"))
    monkeypatch.setenv("VLLM_API_KEY", KEY)
    settings.INFERENCE_ENDPOINTS = parse_endpoint_settings(
        json.dumps(
            [
                {"name": "vllm", "kind": "openai", "url": server.url, "api_key_env": "VLLM_API_KEY", "concurrency": 3},
                {"name": "gpu-box", "kind": "openai", "url": "http://127.0.0.1:9", "enabled": False},
                {"name": "keyless", "kind": "openai", "url": "http://127.0.0.1:9", "api_key_env": "NOT_SET_ANYWHERE"},
            ]
        )
    )
    settings.EVALUATION_RETRY_BACKOFF_MS = 5
    yield server
    server.stop()


def test_an_openai_compatible_endpoint_answers_an_evaluation_end_to_end(
    alice, alice_api, make_model, make_test_set, vllm, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = evaluate(
            alice_api, make_model(alice), make_test_set(alice), base_model_name="llama-3-base", endpoint="vllm"
        )
    assert response.status_code == 202, response.content
    evaluation = Evaluation.objects.get(id=response.json()["evaluation_id"])
    assert evaluation.status == "completed", evaluation.error_message
    assert evaluation.results["fine_tuned"]["accuracy"] == 1.0
    assert evaluation.results["base"]["accuracy"] == pytest.approx(4 / 12, abs=1e-6)
    sent = vllm.chat_requests()
    assert len(sent) == 24
    assert {request.headers.get("Authorization") for request in sent} == {f"Bearer {KEY}"}
    assert sent[0].body["response_format"]["type"] == "json_schema"  # the label schema, enforced by the server
    assert vllm.max_in_flight <= 3  # the operator's concurrency bound, whatever the request asked (4)
    shown = alice_api.get(f"/api/v1/evaluations/{evaluation.id}").json()
    assert (shown["base_endpoint"], shown["fine_tuned_endpoint"]) == ("vllm", "vllm")
    assert (
        KEY not in json.dumps(shown)
        and KEY not in alice_api.get(f"/api/v1/evaluations/{evaluation.id}/export.json").content.decode()
    )


def test_each_candidate_is_asked_on_its_own_endpoint(
    alice, alice_api, make_model, make_test_set, vllm, trained_ollama, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = evaluate(
            alice_api, make_model(alice), make_test_set(alice), base_endpoint="ollama", fine_tuned_endpoint="vllm"
        )
    evaluation = Evaluation.objects.get(id=response.json()["evaluation_id"])
    assert evaluation.status == "completed", evaluation.error_message
    assert {request.model for request in trained_ollama.chat_requests()} == {"llama3.2:3b"}
    assert {request.model for request in vllm.chat_requests()} == {"contracts-ft"}
    assert evaluation.results["fine_tuned"]["accuracy"] == 1.0


def test_the_seed_body_runs_on_the_default_endpoint(
    alice, alice_api, make_model, make_test_set, vllm, trained_ollama, settings, django_capture_on_commit_callbacks
):
    settings.INFERENCE_DEFAULT_ENDPOINT = "vllm"
    with django_capture_on_commit_callbacks(execute=True):
        response = evaluate(alice_api, make_model(alice), make_test_set(alice), base_model_name="llama-3-base")
    evaluation = Evaluation.objects.get(id=response.json()["evaluation_id"])
    assert evaluation.status == "completed", evaluation.error_message
    assert (evaluation.base_endpoint, evaluation.fine_tuned_endpoint) == ("vllm", "vllm")
    assert trained_ollama.chat_requests() == []


@pytest.mark.parametrize(
    "extra, field",
    [
        ({"endpoint": "{url}"}, "endpoint"),
        ({"base_endpoint": "{url}/v1"}, "base_endpoint"),
        ({"fine_tuned_endpoint": "127.0.0.1:{port}"}, "fine_tuned_endpoint"),
        ({"ollama_url": "{url}"}, "ollama_url"),
        ({"base_url": "{url}", "endpoint": "ollama"}, "base_url"),
        ({"api_key": "sk-mine"}, "api_key"),
    ],
)
def test_a_user_cannot_name_a_url_and_nothing_is_sent_there(
    extra, field, alice, alice_api, make_model, make_test_set, ollama_server
):
    with OllamaServer() as theirs:
        theirs.add_model("llama3.2:3b", answer="neutral")
        port = theirs.url.rsplit(":", 1)[1]
        body = {key: value.format(url=theirs.url, port=port) for key, value in extra.items()}
        response = evaluate(alice_api, make_model(alice), make_test_set(alice), **body)
        assert response.status_code == 400, response.content
        reason = response.json()["errors"][field][0]
        assert "never" in reason and "by name" in reason
        assert theirs.chat_requests() == []
    assert not Evaluation.objects.exists()


@pytest.mark.parametrize(
    "extra, field, reason",
    [
        ({"endpoint": "gpu-box"}, "endpoint", "endpoint 'gpu-box' is disabled by the operator"),
        ({"fine_tuned_endpoint": "gpu-box"}, "fine_tuned_endpoint", "disabled by the operator"),
        ({"base_endpoint": "keyless"}, "base_endpoint", "its API key variable NOT_SET_ANYWHERE is not set"),
        ({"endpoint": "nope"}, "endpoint", "there is no inference endpoint named 'nope' (known: local, ollama, vllm"),
    ],
)
def test_an_unusable_endpoint_is_refused_naming_it_with_the_reason(
    extra, field, reason, alice, alice_api, make_model, make_test_set, vllm
):
    response = evaluate(alice_api, make_model(alice), make_test_set(alice), **extra)
    assert response.status_code == 400, response.content
    assert reason in response.json()["errors"][field][0]
    assert not Evaluation.objects.exists()
    assert vllm.chat_requests() == []


def test_an_endpoint_disabled_after_queueing_fails_the_run_with_the_reason(
    alice, alice_api, make_model, make_test_set, vllm, settings
):
    from evaluations import services

    response = evaluate(alice_api, make_model(alice), make_test_set(alice), endpoint="vllm")  # queued, not run
    assert response.status_code == 202
    settings.INFERENCE_ENDPOINTS = [
        endpoint if endpoint.name != "vllm" else type(endpoint)(**{**endpoint.__dict__, "enabled": False})
        for endpoint in settings.INFERENCE_ENDPOINTS
    ]
    evaluation = services.evaluation_execute(evaluation_id=response.json()["evaluation_id"])
    assert evaluation.status == "failed"
    assert evaluation.error_message == "endpoint 'vllm' is disabled by the operator"
    assert vllm.chat_requests() == []


def test_the_local_endpoint_refuses_what_it_cannot_load(
    alice, alice_api, make_model, make_test_set, settings, tmp_path
):
    pytest.importorskip("torch", reason="the local engine's packages are not installed")
    settings.DEMO_BASE_DIR = tmp_path / "no-demo-base-here"
    model = make_model(alice)  # uploaded, no adapter, base llama3.2:3b (not in the catalogue)
    body = {"test_set_path": make_test_set(alice).path, "endpoint": "local"}  # no names: the model's own
    no_adapter = alice_api.post(f"/api/v1/models/{model.id}/evaluate", body, format="json")
    assert no_adapter.status_code == 400
    errors = no_adapter.json()["errors"]
    assert "on the local endpoint, base model 'llama3.2:3b' is not available here" in errors["base_model_name"][0]
    assert "this model has no LoRA adapter in the registry" in errors["fine_tuned_names"][0]
    assert not Evaluation.objects.exists()


def test_what_a_page_request_runs_imports_no_deep_learning_framework(tmp_path):
    """The form's endpoint list, the local endpoint's check and the evaluation services stay light: torch is
    imported on the evaluations worker when a model is loaded, never by a page."""
    import subprocess
    import sys

    code = (
        "import os, sys, django\n"
        "os.environ['DJANGO_SETTINGS_MODULE'] = 'finetune_studio.settings'\n"
        "django.setup()\n"
        "import evaluations.views, evaluations.services, evaluations.local_models, evaluations.api.views\n"
        "from inference.selectors import endpoint_usable\n"
        "endpoint_usable(name='local')\n"
        "from finetune_studio.base_models import base_model_catalogue\n"
        "base_model_catalogue()\n"
        "heavy = sorted(name for name in ('torch', 'transformers', 'peft') if name in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "VAR_DIR": str(tmp_path), "OLLAMA_URL": "http://127.0.0.1:9"}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=Path(__file__).resolve().parents[2])


def test_the_form_offers_each_endpoint_with_its_models_and_says_why_one_is_unavailable(
    alice, alice_browser, make_model, make_test_set, vllm, trained_ollama
):
    make_model(alice)
    make_test_set(alice)
    html = alice_browser.get("/evaluations/new/").content.decode()
    assert '<option value="vllm">vllm (openai)</option>' in html
    assert '<option value="gpu-box" disabled>gpu-box (openai) — unavailable</option>' in html
    assert '<datalist id="models-vllm"><option value="contracts-ft"><option value="llama-3-base"></datalist>' in html
    assert '<option value="llama3.2:3b">' in html  # Ollama's, from the test server
    assert "could not list keyless's models (endpoint &#x27;keyless&#x27;: its API key variable" in html
    assert KEY not in html and vllm.url not in html


def test_the_form_refuses_an_endpoint_the_operator_disabled(
    alice, alice_browser, make_model, make_test_set, vllm, django_capture_on_commit_callbacks
):
    model, dataset = make_model(alice), make_test_set(alice)
    page = alice_browser.post(
        "/evaluations/new/",
        {"model": model.id, "test_set_path": dataset.path, "base_endpoint": "keyless", "fine_tuned_endpoint": "vllm"},
    )
    assert page.status_code == 200
    assert "its API key variable NOT_SET_ANYWHERE is not set" in page.content.decode()
    assert not Evaluation.objects.exists()
