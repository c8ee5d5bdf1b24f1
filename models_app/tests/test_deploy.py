"""Deploying a model's LoRA adapter to Ollama, against the Ollama-speaking test server."""

import hashlib
import json
import re

import pytest

from models_app import deploy, deployments
from models_app.models import RegisteredModel
from tests.factories import make_model

from .conftest import ADAPTER_CONFIG, ADAPTER_WEIGHTS, DEMO_CHAT_TEMPLATE, adapter_files

API = "/api/v1/models"
RUN = {
    "trainer": "lora-sft",
    "base_model": "finetune-studio/demo-llama",
    "system_prompt": "Answer with the clause type.",
    "chat_template_sha256": hashlib.sha256(DEMO_CHAT_TEMPLATE.encode()).hexdigest(),
    "hyperparameters": {"epochs": 20, "lora_alpha": 16},
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def deployable(owner, **kwargs):
    files = kwargs.pop("files", None) or adapter_files()
    # A local folder path, as jobs record it: never an Ollama name, so the trainer's identity is used.
    kwargs.setdefault("base_model", "/srv/bases/demo-base")
    kwargs.setdefault("training_metrics", {"final": {"loss": 1.0}, "run": RUN})
    return make_model(owner, files=files, name="Clause classifier", **kwargs)


def deploy_now(client, model, django_capture_on_commit_callbacks, **payload):
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"{API}/{model.id}/deploy", payload, format="json")
    model.refresh_from_db()
    return response


def test_it_uploads_only_missing_blobs_creates_with_the_training_template_and_verifies(
    alice_api, alice, deploy_ollama, django_capture_on_commit_callbacks
):
    model = deployable(alice)
    config_bytes = adapter_files()["lora_adapters/adapter_config.json"]
    deploy_ollama.blobs[sha(config_bytes)] = config_bytes  # Ollama already holds the config blob

    response = deploy_now(alice_api, model, django_capture_on_commit_callbacks, ollama_name="clauses-v1")

    assert response.status_code == 202, response.json()
    assert response.json()["deploy_status"] == "deploying"
    weights_digest, config_digest = sha(ADAPTER_WEIGHTS), sha(config_bytes)
    heads = {r.path for r in deploy_ollama.requests_to("HEAD", "/api/blobs/")}
    assert heads == {f"/api/blobs/sha256:{weights_digest}", f"/api/blobs/sha256:{config_digest}"}
    uploads = deploy_ollama.requests_to("POST", "/api/blobs/")
    assert [(r.path, r.body) for r in uploads] == [
        (f"/api/blobs/sha256:{weights_digest}", {"size": len(ADAPTER_WEIGHTS)})
    ]
    assert deploy_ollama.blobs[weights_digest] == ADAPTER_WEIGHTS
    assert deploy_ollama.created == [
        {
            "model": "clauses-v1",
            "from": "finetune-studio/demo-llama",
            "adapters": {
                "adapter_model.safetensors": f"sha256:{weights_digest}",
                "adapter_config.json": f"sha256:{config_digest}",
            },
            "template": (
                "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
                "<|im_start|>assistant\n"
            ),
            "parameters": {"stop": ["<|im_end|>"]},
            "system": "Answer with the clause type.",
            "stream": False,
        }
    ]
    shows = [r.body["model"] for r in deploy_ollama.requests_to("POST", "/api/show")]
    assert shows == ["finetune-studio/demo-llama", "finetune-studio/demo-llama", "clauses-v1"]  # API, task, verify
    assert [r.model for r in deploy_ollama.chat_requests()] == ["clauses-v1"]

    assert model.deploy_status == "deployed" and model.deploy_error == ""
    assert model.ollama_name == "clauses-v1" and model.ollama_base == "finetune-studio/demo-llama"
    assert model.ollama_digest == deploy_ollama.digest_of("clauses-v1")  # what the test server's /api/tags lists
    assert model.deployed_at is not None
    details = model.deploy_details
    assert details["uploaded"] == ["adapter_model.safetensors"] and details["reused"] == ["adapter_config.json"]
    assert details["template"]["family"] == "chatml" and details["template"]["applied"] is True
    assert details["smoke"]["answer"] == "ready"  # the created model answers like its base in the test server
    assert details["template"]["training_sha256"] == RUN["chat_template_sha256"] and details["notes"] == []

    body = alice_api.get(f"{API}/{model.id}").json()["model"]
    assert body["ollama_name"] == "clauses-v1" and body["deploy_status"] == "deployed"
    assert body["lineage"]["ollama"]["digest"] == model.ollama_digest


def test_a_version_deploys_under_its_registry_name_and_tag_as_ollama_serves_it(
    alice_api, alice, deploy_ollama, django_capture_on_commit_callbacks
):
    """``support-bot:v1`` (OpenAI's fine_tuned_model here) is a valid Ollama name: chat calls can use it as is."""
    model = deployable(alice)

    response = deploy_now(alice_api, model, django_capture_on_commit_callbacks, ollama_name="support-bot:v1")

    assert response.status_code == 202 and model.deploy_status == "deployed", model.deploy_error
    assert model.ollama_name == "support-bot:v1"
    assert [r.model for r in deploy_ollama.chat_requests()] == ["support-bot:v1"]


def test_deploying_again_reuses_every_blob_and_replaces_the_model(
    alice_api, alice, deploy_ollama, django_capture_on_commit_callbacks
):
    model = deployable(alice)
    assert deploy_now(alice_api, model, django_capture_on_commit_callbacks).status_code == 202
    assert model.ollama_name == f"clause-classifier-{model.id}"  # the default: slug + id
    uploads_before = len(deploy_ollama.requests_to("POST", "/api/blobs/"))

    assert deploy_now(alice_api, model, django_capture_on_commit_callbacks).status_code == 202

    assert len(deploy_ollama.requests_to("POST", "/api/blobs/")) == uploads_before == 2
    assert model.deploy_status == "deployed" and len(deploy_ollama.created) == 2
    assert model.deploy_details["reused"] == ["adapter_model.safetensors", "adapter_config.json"]


def test_a_template_we_cannot_translate_is_not_sent_and_the_result_says_so(
    alice_api, alice, deploy_ollama, django_capture_on_commit_callbacks
):
    model = deployable(alice, files=adapter_files(template="{{ messages }} custom"))
    deploy_now(alice_api, model, django_capture_on_commit_callbacks, ollama_name="plain")
    assert "template" not in deploy_ollama.created[0] and "parameters" not in deploy_ollama.created[0]
    assert model.deploy_status == "deployed"
    assert model.deploy_details["notes"] == [
        "lora_adapters/chat_template.jinja differs from the template the trainer recorded "
        f"(sha256 {RUN['chat_template_sha256'][:12]}…)",
        "chat template unrecognised: the base's template is kept",
    ]


def test_a_training_template_with_tools_is_sent_without_them_and_the_result_says_so(
    alice_api, alice, deploy_ollama, django_capture_on_commit_callbacks
):
    from trainers.demo_base import CHAT_TEMPLATE

    model = deployable(alice, files=adapter_files(template=CHAT_TEMPLATE))
    deploy_now(alice_api, model, django_capture_on_commit_callbacks, ollama_name="tools")
    assert deploy_ollama.created[0]["template"].startswith("{{- range .Messages }}<|im_start|>")
    assert model.deploy_status == "deployed"
    assert model.deploy_details["notes"][-1] == (
        "the chatml template sent to Ollama renders messages only: the training template's tool definitions and "
        "calls are not translated, so tool calling through this Ollama model is not what was trained (evaluate "
        "tool calling on the local endpoint)"
    )


def test_it_refuses_an_unsupported_base_architecture_before_uploading(
    alice_api, alice, deploy_ollama, django_capture_on_commit_callbacks
):
    deploy_ollama.add_model("qwen2.5:0.5b", family="qwen2")
    model = deployable(alice)
    response = deploy_now(alice_api, model, django_capture_on_commit_callbacks, base="qwen2.5:0.5b")
    assert response.status_code == 400
    assert "unsupported base architecture 'qwen2'" in response.json()["detail"]
    assert "gemma2 and llama bases" in response.json()["detail"]
    assert deploy_ollama.requests_to("HEAD", "/api/blobs/") == [] and deploy_ollama.created == []
    assert model.deploy_status == "idle"


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        ({**ADAPTER_CONFIG, "lora_alpha": 16.0}, "lora_alpha is 16.0"),
        ({**ADAPTER_CONFIG, "peft_type": "IA3"}, "Ollama takes LoRA adapters only"),
    ],
)
def test_it_refuses_an_adapter_ollamas_converter_cannot_read(
    alice_api, alice, deploy_ollama, django_capture_on_commit_callbacks, config, reason
):
    model = deployable(alice, files=adapter_files(config=config))
    response = deploy_now(alice_api, model, django_capture_on_commit_callbacks)
    assert response.status_code == 400 and reason in response.json()["detail"]
    assert deploy_ollama.requests == []  # refused before talking to Ollama


def test_it_refuses_a_model_without_adapter_files_with_409(alice_api, alice, deploy_ollama):
    model = make_model(alice, files={"gguf/model.gguf": b"GGUF"})
    response = alice_api.post(f"{API}/{model.id}/deploy", {}, format="json")
    assert response.status_code == 409
    assert "no adapter_model.safetensors" in response.json()["detail"]


def test_it_refuses_an_adapter_without_its_config_with_409(alice_api, alice, deploy_ollama):
    model = make_model(alice, files={"lora_adapters/adapter_model.safetensors": ADAPTER_WEIGHTS})
    response = alice_api.post(f"{API}/{model.id}/deploy", {}, format="json")
    assert response.status_code == 409 and "lora_adapters/adapter_config.json" in response.json()["detail"]


def test_an_unreachable_ollama_is_a_503_naming_its_url(alice_api, alice, settings, closed_port_url):
    settings.OLLAMA_URL = closed_port_url
    model = deployable(alice)
    response = alice_api.post(f"{API}/{model.id}/deploy", {}, format="json")
    assert response.status_code == 503
    assert closed_port_url in response.json()["detail"] and "unreachable" in response.json()["detail"]
    model.refresh_from_db()
    assert model.deploy_status == "idle"


def test_a_base_ollama_does_not_know_is_a_400_saying_how_to_fix_it(alice_api, alice, deploy_ollama):
    model = deployable(alice)
    response = alice_api.post(f"{API}/{model.id}/deploy", {"base": "llama3.2:1b"}, format="json")
    assert response.status_code == 400
    assert "'llama3.2:1b' is not in Ollama" in response.json()["detail"] and "pass `base`" in response.json()["detail"]


def test_a_wrong_digest_fails_the_deploy_with_ollamas_reason(
    alice_api, alice, deploy_ollama, django_capture_on_commit_callbacks, monkeypatch
):
    model = deployable(alice)
    # The object changes between hashing and uploading: Ollama hashes what it received and refuses it.
    monkeypatch.setattr(deploy, "upload_chunks", lambda key: iter([b"x" * len(ADAPTER_WEIGHTS)]))
    response = deploy_now(alice_api, model, django_capture_on_commit_callbacks)
    assert response.status_code == 202
    assert model.deploy_status == "failed" and model.ollama_name == ""
    assert "HTTP 400: digest mismatch" in model.deploy_error and "changed while uploading" in model.deploy_error
    assert model.deploy_details["error_code"] == "ollama_error"
    assert deploy_ollama.created == []


def test_a_file_changed_in_storage_since_registration_is_not_deployed(
    alice_api, alice, deploy_ollama, django_capture_on_commit_callbacks
):
    from finetune_studio.objects import bucket

    model = deployable(alice)
    bucket("models").put_bytes(model.file_key("lora_adapters/adapter_model.safetensors"), b"tampered")
    deploy_now(alice_api, model, django_capture_on_commit_callbacks)
    assert model.deploy_status == "failed" and "changed in storage since it was registered" in model.deploy_error
    assert deploy_ollama.requests_to("POST", "/api/blobs/") == []


def test_a_404_from_create_fails_the_deploy_with_ollamas_words(
    alice_api, alice, deploy_ollama, django_capture_on_commit_callbacks
):
    deploy_ollama.inject("status", status=404, paths=("/api/create",), message="model 'ghost' not found")
    model = deployable(alice)
    deploy_now(alice_api, model, django_capture_on_commit_callbacks, ollama_name="clauses")
    assert model.deploy_status == "failed"
    assert (
        "create of model 'clauses'" in model.deploy_error and "HTTP 404: model 'ghost' not found" in model.deploy_error
    )
    assert deploy_ollama.chat_requests() == []


def test_ollama_going_away_during_the_deploy_fails_it_naming_the_url(
    alice_api, alice, deploy_ollama, django_capture_on_commit_callbacks
):
    deploy_ollama.inject("status", status=503, paths=("/api/blobs",), message="server busy")
    model = deployable(alice)
    deploy_now(alice_api, model, django_capture_on_commit_callbacks)
    assert model.deploy_status == "failed" and model.deploy_details["error_code"] == "ollama_unavailable"
    assert deploy_ollama.url in model.deploy_error and "server busy" in model.deploy_error


def test_bob_gets_404_anonymous_gets_401_and_staff_may_deploy(
    alice, bob_api, anon_api, olivia_api, deploy_ollama, django_capture_on_commit_callbacks
):
    model = deployable(alice)
    assert bob_api.post(f"{API}/{model.id}/deploy", {}, format="json").status_code == 404
    assert anon_api.post(f"{API}/{model.id}/deploy", {}, format="json").status_code == 401
    assert deploy_ollama.requests == [] and deploy_ollama.created == []
    assert deploy_now(olivia_api, model, django_capture_on_commit_callbacks).status_code == 202
    assert model.deploy_status == "deployed"


def test_a_second_deploy_while_one_runs_is_a_409(alice_api, alice, deploy_ollama):
    model = deployable(alice)
    assert alice_api.post(f"{API}/{model.id}/deploy", {}, format="json").status_code == 202  # task not run yet
    response = alice_api.post(f"{API}/{model.id}/deploy", {}, format="json")
    assert response.status_code == 409 and "already running" in response.json()["detail"]


@pytest.mark.parametrize(
    ("payload", "status", "reason"),
    [
        ({"ollama_name": "../etc"}, 400, "is not an Ollama model name"),
        ({"ollama_name": "finetune-studio/demo-llama"}, 400, "would replace the base"),
        ({"ollama_name": "x", "url": "http://evil"}, 400, "Unknown field"),
    ],
)
def test_it_refuses_bad_names_and_never_takes_a_url_from_the_request(
    alice_api, alice, deploy_ollama, payload, status, reason
):
    model = deployable(alice)
    response = alice_api.post(f"{API}/{model.id}/deploy", payload, format="json")
    assert response.status_code == status and reason in json.dumps(response.json())


def test_it_refuses_to_overwrite_an_ollama_model_it_did_not_create(alice_api, alice, bob, deploy_ollama):
    deploy_ollama.add_model("llama3.2:3b")
    model = deployable(alice)
    response = alice_api.post(f"{API}/{model.id}/deploy", {"ollama_name": "llama3.2:3b"}, format="json")
    assert response.status_code == 409 and "did not create" in response.json()["detail"]

    make_model(bob, name="bob's", ollama_name="taken")
    response = alice_api.post(f"{API}/{model.id}/deploy", {"ollama_name": "taken"}, format="json")
    assert response.status_code == 409 and "another registered model" in response.json()["detail"]


def test_a_model_that_is_not_ready_is_not_deployed(alice_api, alice, deploy_ollama):
    model = deployable(alice, status=RegisteredModel.Status.UPLOADING)
    response = alice_api.post(f"{API}/{model.id}/deploy", {}, format="json")
    assert response.status_code == 409 and "only a ready model" in response.json()["detail"]


def test_the_page_deploys_and_then_shows_the_name_and_digest(
    alice_browser, alice, deploy_ollama, django_capture_on_commit_callbacks
):
    model = deployable(alice)
    page = alice_browser.get(f"/models/{model.id}/").content.decode()
    assert f'action="/models/{model.id}/deploy/"' in page
    assert f'value="clause-classifier-{model.id}"' in page and 'value="finetune-studio/demo-llama"' in page

    with django_capture_on_commit_callbacks(execute=True):
        response = alice_browser.post(f"/models/{model.id}/deploy/", {"ollama_name": "from-page", "base": ""})
    assert response.status_code == 302 and response["Location"] == f"/models/{model.id}/"
    page = alice_browser.get(f"/models/{model.id}/").content.decode()
    model.refresh_from_db()
    assert model.ollama_name == "from-page"
    assert "<code data-ollama-name>from-page</code>" in page and model.ollama_digest[:10] in page
    assert "Deploy again" in page


@pytest.mark.parametrize(
    "files, reason",
    [
        # What the example trainer registers: a scikit-learn classifier, no LoRA adapter.
        (
            {"classifier/model.joblib": b"joblib", "classifier/labels.json": b"[]", "metrics.json": b"{}"},
            "the model has no adapter_model.safetensors",
        ),
        (
            {"lora_adapters/adapter_model.safetensors": ADAPTER_WEIGHTS},
            "no lora_adapters/adapter_config.json beside it",
        ),
    ],
    ids=["example classifier", "adapter without its config"],
)
def test_the_page_does_not_offer_a_deploy_it_would_refuse_and_says_why(alice_browser, alice, files, reason):
    model = make_model(alice, files=files, name="Example classifier")
    page = alice_browser.get(f"/models/{model.id}/").content.decode()
    assert f'action="/models/{model.id}/deploy/"' not in page and "Deploy to Ollama</button>" not in page
    unavailable = re.search(r"<p class=\"hint\" data-deploy-unavailable>(.*?)</p>", page, re.DOTALL).group(1)
    assert "Not deployable to Ollama" in unavailable and reason in unavailable


def test_the_page_shows_a_refusal_as_a_message(alice_browser, alice, settings, closed_port_url):
    settings.OLLAMA_URL = closed_port_url
    model = deployable(alice)
    response = alice_browser.post(f"/models/{model.id}/deploy/", {}, follow=True)
    assert "Not deployed: Ollama is unreachable at " + closed_port_url in response.content.decode()


def test_bob_cannot_deploy_alices_model_from_the_page(client, alice, bob, deploy_ollama):
    model = deployable(alice)
    client.force_login(bob)
    assert client.post(f"/models/{model.id}/deploy/", {}).status_code == 404
    assert deploy_ollama.requests == []


def test_after_a_deploy_evaluate_defaults_to_the_deployed_name(
    alice_api, alice_browser, alice, deploy_ollama, django_capture_on_commit_callbacks
):
    from evaluations.models import Evaluation
    from finetune_studio.objects import bucket
    from jobs.models import Dataset

    model = deployable(alice)
    deploy_now(alice_api, model, django_capture_on_commit_callbacks, ollama_name="clauses-ft")
    path = f"datasets/users/{alice.id}/datasets/1-test/test.jsonl"
    data = b'{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n'
    bucket("datasets").put_bytes(path.removeprefix("datasets/"), data)
    Dataset.objects.create(
        owner=alice,
        name="test",
        path=path,
        file_format="jsonl",
        format="text_label",
        size_bytes=len(data),
        records=2,
        labels=["x", "y"],
    )

    form = alice_browser.get(f"/evaluations/new/?model={model.id}").content.decode()
    assert 'data-ollama-name="clauses-ft"' in form
    response = alice_api.post(
        f"{API}/{model.id}/evaluate",
        {"test_set_path": path, "base_model_name": "finetune-studio/demo-llama"},
        format="json",
    )
    assert response.status_code == 202, response.json()
    assert Evaluation.objects.get(id=response.json()["evaluation_id"]).fine_tuned_name == "clauses-ft"


def test_a_restarted_process_requeues_deploys_left_deploying(alice, deploy_ollama):

    model = deployable(alice)
    deployments.model_deploy_start(model_id=model.id, ollama_name="resumed")  # its task never ran (no commit)
    assert deployments.model_deploy_redispatch_unfinished() == 1  # eager: runs it now
    model.refresh_from_db()
    assert model.deploy_status == "deployed" and model.ollama_name == "resumed"


def test_the_deploy_task_runs_on_the_default_queue():
    from finetune_studio.celery import queue_of

    assert queue_of("models_app.model_deploy") == "default"


def test_the_admin_deploy_action_reports_refusals(admin_client, alice, deploy_ollama):
    ready = deployable(alice)
    without_adapter = make_model(alice, name="no adapter", files={"gguf/model.gguf": b"GGUF"})
    response = admin_client.post(
        "/admin/models_app/registeredmodel/",
        {"action": "deploy_to_ollama", "_selected_action": [ready.id, without_adapter.id]},
        follow=True,
    )
    page = response.content.decode()
    assert "Clause classifier: deploying to Ollama." in page
    assert "No adapter: not deployed: the model has no adapter_model.safetensors" in page
    ready.refresh_from_db()
    assert ready.deploy_status == "deploying"


@pytest.mark.postgres
def test_two_models_asking_for_one_new_name_at_once_get_one_deploy_and_one_409(
    transactional_db, alice, deploy_ollama, tasks_not_run
):
    import threading

    from django.db import connection

    models = [deployable(alice) for _ in range(3)]
    outcomes = []
    at_once = threading.Barrier(len(models))

    def start(model):
        try:
            at_once.wait(10)  # all three check the name at the same moment
            deployments.model_deploy_start(model_id=model.id, ollama_name="shared-name")
            outcomes.append("deploying")
        except deploy.DeployConflict as exc:
            outcomes.append(str(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=start, args=(model,)) for model in models]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes)[-1] == "deploying" and outcomes.count("deploying") == 1
    assert all("another registered model" in outcome for outcome in outcomes if outcome != "deploying")
    assert RegisteredModel.objects.filter(deploy_status="deploying").count() == 1


def test_a_failed_redeploy_keeps_the_live_deployment_beside_the_failed_attempt(
    alice_api, alice_browser, alice, deploy_ollama, django_capture_on_commit_callbacks
):
    model = deployable(alice)
    deploy_now(alice_api, model, django_capture_on_commit_callbacks, ollama_name="clauses-v1")
    assert model.deploy_status == "deployed"
    live_digest, live_deployed_at, updated_at = model.ollama_digest, model.deployed_at, model.updated_at

    # The redeploy fails at create: Ollama still serves the first deployment, untouched.
    deploy_ollama.inject("status", status=500, paths=("/api/create",), message="disk full")
    deploy_now(alice_api, model, django_capture_on_commit_callbacks, ollama_name="clauses-v1")

    assert model.deploy_status == "failed" and "disk full" in model.deploy_error
    assert model.ollama_name == "clauses-v1" and model.ollama_digest == live_digest
    assert model.deployed_at == live_deployed_at and model.updated_at == updated_at  # a deploy is not an edit
    assert model.deploy_details["error_code"] == "ollama_unavailable"  # the attempt, as before (a 5xx)

    body = alice_api.get(f"{API}/{model.id}").json()["model"]
    live = body["deployment"]
    assert live["name"] == "clauses-v1" and live["base"] == "finetune-studio/demo-llama"
    assert live["digest"] == live_digest and live["deployed_at"] == live_deployed_at.isoformat()
    assert live["template"]["family"] == "chatml" and live["template"]["applied"] is True
    assert live["smoke"]["answer"] == "ready"
    assert live["still_served"] is True  # checked in Ollama's /api/tags after the failure
    attempt = body["deploy_attempt"]
    assert attempt["status"] == "failed" and "disk full" in attempt["error"]
    assert attempt["error_code"] == "ollama_unavailable" and attempt["target"] == "clauses-v1"
    assert attempt["started_at"] and attempt["finished_at"] >= attempt["started_at"]
    assert body["deploy_status"] == "failed" and body["ollama_digest"] == live_digest  # old keys kept
    assert body["updated_at"] == alice_api.get(f"{API}/{model.id}").json()["model"]["updated_at"]

    ollama = body["lineage"]["ollama"]
    assert ollama["name"] == "clauses-v1" and ollama["digest"] == live_digest
    assert ollama["smoke_answer"] == "ready" and ollama["template_family"] == "chatml"
    assert ollama["last_attempt"]["status"] == "failed" and "disk full" in ollama["last_attempt"]["error"]

    page = alice_browser.get(f"/models/{model.id}/").content.decode()
    assert "<code data-ollama-name>clauses-v1</code>" in page and live_digest[:10] in page
    assert "data-live-smoke>ready<" in page and "chatml" in page
    assert "data-deploy-error>" in page and "disk full" in page
    assert "Last deploy attempt failed" in page and "still serves" in page

    import io
    import zipfile

    archive = alice_api.get(f"{API}/{model.id}/download")
    with zipfile.ZipFile(io.BytesIO(b"".join(archive.streaming_content))) as zipped:
        card = zipped.read("README.md").decode()
        metadata = json.loads(zipped.read("metadata.json"))
    assert "- Ollama: `clauses-v1` from `finetune-studio/demo-llama`, digest `" + live_digest in card
    assert "- Last deploy attempt: failed at " in card and "disk full" in card
    assert metadata["lineage"]["ollama"]["last_attempt"]["status"] == "failed"


def test_a_successful_redeploy_moves_the_live_record_and_clears_the_attempts_error(
    alice_api, alice, deploy_ollama, django_capture_on_commit_callbacks
):
    model = deployable(alice)
    deploy_now(alice_api, model, django_capture_on_commit_callbacks, ollama_name="first")
    deploy_ollama.inject("status", status=500, paths=("/api/create",), message="disk full", times=1)
    deploy_now(alice_api, model, django_capture_on_commit_callbacks, ollama_name="second")
    assert model.ollama_name == "first" and model.deploy_status == "failed"

    deploy_now(alice_api, model, django_capture_on_commit_callbacks, ollama_name="second")

    body = alice_api.get(f"{API}/{model.id}").json()["model"]
    assert body["deployment"]["name"] == "second" and body["deployment"]["digest"] == deploy_ollama.digest_of("second")
    assert body["deploy_attempt"]["status"] == "deployed" and body["deploy_attempt"]["error"] == ""
    assert body["lineage"]["ollama"]["last_attempt"]["status"] == "deployed"


def test_a_model_never_deployed_has_no_live_deployment_even_after_a_failed_attempt(
    alice_api, alice, deploy_ollama, django_capture_on_commit_callbacks
):
    deploy_ollama.inject("status", status=500, paths=("/api/create",), message="disk full")
    model = deployable(alice)
    deploy_now(alice_api, model, django_capture_on_commit_callbacks)
    body = alice_api.get(f"{API}/{model.id}").json()["model"]
    assert body["deployment"] is None and body["deploy_attempt"]["status"] == "failed"
    assert body["lineage"]["ollama"]["name"] is None


def test_a_failed_redeploy_says_so_when_ollama_no_longer_serves_the_live_deployment(
    alice_api, alice_browser, alice, deploy_ollama, django_capture_on_commit_callbacks
):
    model = deployable(alice)
    deploy_now(alice_api, model, django_capture_on_commit_callbacks, ollama_name="clauses-v1")
    deploy_ollama.remove_model("clauses-v1")  # someone ran `ollama rm clauses-v1`
    deploy_ollama.inject("status", status=500, paths=("/api/create",), message="disk full")

    deploy_now(alice_api, model, django_capture_on_commit_callbacks, ollama_name="clauses-v1")

    live = alice_api.get(f"{API}/{model.id}").json()["model"]["deployment"]
    assert live["name"] == "clauses-v1" and live["still_served"] is False
    assert live["checked"]["reason"] == "Ollama no longer lists 'clauses-v1'"
    page = alice_browser.get(f"/models/{model.id}/").content.decode()
    assert "data-live-not-served>" in page and "no longer lists" in page and ">not served</span>" in page


def test_a_parity_verdict_marks_the_live_deployment_drifted_until_another_digest_is_deployed(
    alice_api, alice_browser, alice, deploy_ollama, django_capture_on_commit_callbacks, listen
):
    from finetune_studio.events import user_channel

    model = deployable(alice)
    deploy_now(alice_api, model, django_capture_on_commit_callbacks, ollama_name="first")
    updated_at = model.updated_at

    with pytest.raises(deployments.ParityStale):
        deployments.model_deploy_parity_record(model_id=model.id, digest="0" * 64, drifted=True)
    listener = listen(user_channel(alice.id))
    with django_capture_on_commit_callbacks(execute=True):
        deployments.model_deploy_parity_record(
            model_id=model.id, digest=model.ollama_digest, drifted=True, summary={"agreement": 0.62, "bound": 0.05}
        )
    events = [item.data if isinstance(item.data, dict) else json.loads(item.data) for item in listener.events()]
    assert [(e["action"], e["deploy_drifted"], e["ollama_still_served"]) for e in events] == [("deploy", True, True)]

    body = alice_api.get(f"{API}/{model.id}").json()["model"]
    assert body["deployment"]["drifted"] is True and body["deployment"]["parity"]["agreement"] == 0.62
    assert body["deployment"]["parity"]["digest"] == model.ollama_digest
    assert body["lineage"]["ollama"]["drifted"] is True
    page = alice_browser.get(f"/models/{model.id}/").content.decode()
    assert "data-live-status>drifted</span>" in page and "data-lineage-drifted>drifted</span>" in page
    model.refresh_from_db()
    assert model.updated_at == updated_at

    deploy_now(alice_api, model, django_capture_on_commit_callbacks, ollama_name="second")

    body = alice_api.get(f"{API}/{model.id}").json()["model"]
    assert body["deployment"]["drifted"] is None and body["deployment"]["parity"] is None
    assert body["lineage"]["ollama"]["drifted"] is None


def test_a_failed_redeploy_whose_create_replaced_the_live_model_says_it_is_no_longer_served(
    alice_api, alice_browser, alice, deploy_ollama, django_capture_on_commit_callbacks
):
    deploy_ollama.add_model("other-llama", answer="ready", family="llama")
    model = deployable(alice)
    deploy_now(alice_api, model, django_capture_on_commit_callbacks, ollama_name="clauses-v1")
    live_digest = model.ollama_digest
    # The redeploy creates clauses-v1 again from another base, then its smoke prompt fails.
    deploy_ollama.inject("status", status=400, paths=("/api/chat",), model="clauses-v1", message="bad weights")

    deploy_now(alice_api, model, django_capture_on_commit_callbacks, ollama_name="clauses-v1", base="other-llama")

    assert model.deploy_status == "failed" and "failed its smoke prompt" in model.deploy_error
    assert model.ollama_digest == live_digest != deploy_ollama.digest_of("clauses-v1")
    live = alice_api.get(f"{API}/{model.id}").json()["model"]["deployment"]
    assert live["still_served"] is False and live["checked"]["digest"] == deploy_ollama.digest_of("clauses-v1")
    assert "the failed attempt replaced it" in live["checked"]["reason"]
    page = alice_browser.get(f"/models/{model.id}/").content.decode()
    assert "data-live-not-served>" in page and "the failed attempt replaced it" in page


def test_redeploying_the_same_digest_keeps_its_parity_verdict(
    alice_api, alice, deploy_ollama, django_capture_on_commit_callbacks
):
    model = deployable(alice)
    deploy_now(alice_api, model, django_capture_on_commit_callbacks, ollama_name="same")
    deployments.model_deploy_parity_record(model_id=model.id, digest=model.ollama_digest, drifted=False)

    deploy_now(alice_api, model, django_capture_on_commit_callbacks, ollama_name="same")  # same layers, same digest

    live = alice_api.get(f"{API}/{model.id}").json()["model"]["deployment"]
    assert live["digest"] == model.ollama_digest and live["drifted"] is False
