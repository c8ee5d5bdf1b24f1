"""Deployment parity with the real engine: a lora-sft adapter on demo-base, asked in the studio's own engine and,
deployed, on an Ollama test server that answers some items differently.

The adapter is trained here (the demo base's preset, seconds on a CPU) and deployed through the API to the
deploy test server; the deployed model's answers are the test's to choose, the adapter's are the engine's.
"""

import json
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the training extra (requirements-train.txt) is not installed")
pytest.importorskip("transformers", reason="the training extra (requirements-train.txt) is not installed")
pytest.importorskip("peft", reason="the training extra (requirements-train.txt) is not installed")

from evaluations.models import Evaluation, Prediction  # noqa: E402
from evaluations.tests.test_local_loop import _upload, trained_model  # noqa: E402,F401  (the trained adapter)
from models_app.models import RegisteredModel  # noqa: E402
from models_app.tests.conftest import DeployOllamaServer  # noqa: E402
from tests.support.ollama_server import answer_from_mapping  # noqa: E402
from trainers.tests.conftest import demo_base  # noqa: E402,F401

pytestmark = [pytest.mark.slow, pytest.mark.django_db]

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "contracts"
EXAMPLES = 20


@pytest.fixture
def deployed(trained_model, settings, alice_api, django_capture_on_commit_callbacks):  # noqa: F811
    """The trained model deployed as ``contracts-ft``; ``behaviour["answer"]`` is how the deployment answers."""
    server = DeployOllamaServer().start()
    settings.OLLAMA_URL = server.url
    settings.EVALUATION_RETRY_BACKOFF_MS = 5
    behaviour = {"answer": lambda model, prompt: "termination"}
    # A created model answers as its base does: the deployment's answers are whatever behaviour says now.
    server.add_model(
        "finetune-studio/demo-llama", answer=lambda model, prompt: behaviour["answer"](model, prompt), family="llama"
    )
    deploy(alice_api, trained_model, django_capture_on_commit_callbacks, "contracts-ft")
    yield RegisteredModel.objects.get(id=trained_model.id), server, behaviour
    server.stop()


def deploy(api, model, capture, name: str) -> None:
    with capture(execute=True):
        response = api.post(
            f"/api/v1/models/{model.id}/deploy",
            {"ollama_name": name, "base": "finetune-studio/demo-llama"},
            format="json",
        )
    assert response.status_code == 202, response.content
    model.refresh_from_db()
    assert model.deploy_status == "deployed", model.deploy_error
    assert model.ollama_name == name and model.ollama_digest


def check_parity(api, model, capture, body: dict, *, execute: bool = True):
    with capture(execute=execute) as callbacks:
        response = api.post(f"/api/v1/models/{model.id}/parity", body, format="json")
    assert response.status_code == 202, response.content
    return Evaluation.objects.get(id=response.json()["evaluation_id"]), callbacks


def answers_of(evaluation: Evaluation, candidate: str) -> dict[int, Prediction]:
    return {row.index: row for row in Prediction.objects.filter(evaluation=evaluation, candidate=candidate)}


def test_a_deployment_answering_differently_is_marked_drifted_and_one_answering_alike_is_not(
    deployed, alice_api, alice_browser, django_capture_on_commit_callbacks
):
    model, server, behaviour = deployed
    test_set = _upload(alice_api, SAMPLES / "test.jsonl")
    # The sample is an instruction set whose outputs are five labels: compared as a classification.
    body = {"test_set_path": test_set["path"], "max_examples": EXAMPLES, "task": "classification"}

    # The deployment answers "termination" whatever it is asked (a template that lost the instruction).
    evaluation, _ = check_parity(alice_api, model, django_capture_on_commit_callbacks, body)
    assert evaluation.status == "completed", evaluation.error_message
    plans = evaluation.candidate_plans
    assert [(plan["endpoint"], plan["source"]) for plan in plans] == [
        ("local", "registry_adapter"),
        ("ollama", "named"),
    ]
    assert plans[1]["name"] == "contracts-ft"
    local = answers_of(evaluation, plans[0]["name"])
    assert len(local) == EXAMPLES
    report = evaluation.results["parity"]
    same = {index for index, row in local.items() if row.parsed_label == "termination"}
    row = report["candidates"][0]
    assert report["agreement"] == pytest.approx(len(same) / EXAMPLES) and report["agreement"] < 1
    assert row["changed_count"] == EXAMPLES - len(same)
    assert {item["index"] for item in row["changed"]} == set(local) - same
    assert all(item["deployed_answer"] == "termination" for item in row["changed"])
    local_accuracy = evaluation.results["base"]["accuracy"]
    deployed_accuracy = evaluation.results["fine_tuned"]["accuracy"]
    assert local_accuracy >= 0.5, evaluation.results["base"]  # the trained adapter knows the labels
    assert row["difference"]["accuracy"] == pytest.approx(deployed_accuracy - local_accuracy, abs=1e-6)
    assert row["accuracy"]["ci_low"] <= row["difference"]["accuracy"] <= row["accuracy"]["ci_high"]
    assert 0 <= row["mcnemar"]["p_value"] <= 1
    assert report["drifted"] is True and report["recorded"] is True
    # A parity check is no evidence about the fine-tune: the model's own eval results are not replaced by it.
    model.refresh_from_db()
    assert (model.eval_results or {}).get("evaluation_id") != evaluation.id

    # The mark: in the API, on the model page and its lineage, on the check's own page.
    deployment = alice_api.get(f"/api/v1/models/{model.id}").json()["model"]["deployment"]
    assert deployment["drifted"] is True and deployment["parity"]["evaluation_id"] == evaluation.id
    assert deployment["parity"]["digest"] == model.ollama_digest
    assert alice_api.get(f"/api/v1/models/{model.id}").json()["model"]["lineage"]["ollama"]["drifted"] is True
    page = alice_browser.get(f"/models/{model.id}/").content.decode()
    assert ">drifted</span>" in page and "data-lineage-drifted" in page and "data-parity-check" in page
    detail = alice_browser.get(f"/evaluations/{evaluation.id}/").content.decode()
    assert "data-parity-verdict>drifted" in detail and 'data-parity-changed="contracts-ft"' in detail

    # Now the deployment gives the adapter's own answers, and a q4_K_M variant still answers "termination".
    behaviour["answer"] = answer_from_mapping({row.input_text: row.prediction_text for row in local.values()})
    server.add_model("contracts-ft:q4_K_M", answer="termination")
    again, _ = check_parity(
        alice_api, model, django_capture_on_commit_callbacks, {**body, "variants": ["contracts-ft:q4_K_M"]}
    )
    assert again.status == "completed", again.error_message
    report = again.results["parity"]
    assert report["agreement"] == 1.0 and report["candidates"][0]["changed"] == []
    assert report["candidates"][0]["difference"]["accuracy"] == 0.0
    assert report["drifted"] is False and report["recorded"] is True
    variant = report["candidates"][1]
    assert variant["model"] == "contracts-ft:q4_K_M" and variant["role"] == "variant"
    assert variant["agreement"] == pytest.approx(len(same) / EXAMPLES) and variant["beyond_bound"] is True
    deployment = alice_api.get(f"/api/v1/models/{model.id}").json()["model"]["deployment"]
    assert deployment["drifted"] is False  # the variant is reported, never marked: it is not what is live
    assert deployment["parity"]["variants"] == {"contracts-ft:q4_K_M": variant["agreement"]}
    assert ">drifted</span>" not in alice_browser.get(f"/models/{model.id}/").content.decode()
    # The page's form does the same: the model page links to it, it names the deployment, it starts a check.
    form = alice_browser.get(f"/models/{model.id}/parity/").content.decode()
    assert "data-parity-deployed>contracts-ft<" in form
    with django_capture_on_commit_callbacks(execute=True):
        posted = alice_browser.post(
            f"/models/{model.id}/parity/",
            {"test_set_path": test_set["path"], "max_examples": "4", "variants": "", "task": "classification"},
        )
    assert posted.status_code == 302, posted.content.decode()[-2000:]
    from_page = Evaluation.objects.latest("id")
    assert posted["Location"] == f"/evaluations/{from_page.id}/"
    assert from_page.status == "completed" and from_page.results["parity"]["agreement"] == 1.0
    print(
        "PARITY",
        json.dumps(
            {
                "examples": EXAMPLES,
                "adapter_accuracy": local_accuracy,
                "drifted_deployment": {
                    "accuracy": deployed_accuracy,
                    "agreement": evaluation.results["parity"]["agreement"],
                    "summary": evaluation.results["parity"]["summary"],
                },
                "faithful_deployment": {"agreement": report["agreement"], "summary": report["summary"]},
                "variant_agreement": variant["agreement"],
            }
        ),
    )


def test_an_instruction_test_set_is_compared_as_generation_by_token_f1_and_a_drop_marks_the_deployment(
    deployed, alice_api, alice_browser, django_capture_on_commit_callbacks
):
    model, _server, behaviour = deployed
    test_set = _upload(alice_api, SAMPLES / "test.jsonl")  # instruction/input/output: a generation set
    body = {"test_set_path": test_set["path"], "max_examples": 12}

    evaluation, _ = check_parity(alice_api, model, django_capture_on_commit_callbacks, body)
    assert evaluation.status == "completed", evaluation.error_message
    assert evaluation.config["task"] == "generation"
    local = answers_of(evaluation, evaluation.candidates[0])
    report = evaluation.results["parity"]
    assert (report["task"], report["primary_metric"]) == ("generation", "token_f1")
    row = report["candidates"][0]
    same = {index for index, answer in local.items() if answer.prediction_text.strip().lower() == "termination"}
    assert report["agreement"] == pytest.approx(len(same) / len(local)) and report["agreement"] < 1
    assert {item["index"] for item in row["changed"]} == set(local) - same
    local_f1 = evaluation.results["base"]["token_f1"]
    deployed_f1 = evaluation.results["fine_tuned"]["token_f1"]
    assert local_f1 >= 0.5, evaluation.results["base"]  # the trained adapter answers with the labels
    assert row["difference"]["token_f1"] == pytest.approx(deployed_f1 - local_f1, abs=1e-6)
    assert row["primary"]["ci_low"] <= row["primary"]["delta"] <= row["primary"]["ci_high"]
    assert row["secondary"]["metric"] == "chrf" and row["mcnemar"] is None
    assert report["drifted"] is True and report["recorded"] is True and "token f1" in report["summary"]
    deployment = alice_api.get(f"/api/v1/models/{model.id}").json()["model"]["deployment"]
    assert deployment["drifted"] is True
    assert deployment["parity"]["metric"] == "token_f1"
    assert deployment["parity"]["difference"] == row["difference"]["token_f1"]
    detail = alice_browser.get(f"/evaluations/{evaluation.id}/").content.decode()
    assert "token_f1 Δ (95 % CI)" in detail and "data-parity-verdict>drifted" in detail

    # The deployment now answers as the adapter does: consistent, and the mark is cleared.
    behaviour["answer"] = answer_from_mapping({row.input_text: row.prediction_text for row in local.values()})
    again, _ = check_parity(alice_api, model, django_capture_on_commit_callbacks, body)
    assert again.status == "completed", again.error_message
    assert again.results["parity"]["agreement"] == 1.0 and again.results["parity"]["drifted"] is False
    assert alice_api.get(f"/api/v1/models/{model.id}").json()["model"]["deployment"]["drifted"] is False


def test_a_verdict_on_a_digest_replaced_during_the_check_marks_nothing_and_says_so(
    deployed, alice_api, alice_browser, django_capture_on_commit_callbacks
):
    model, _server, _behaviour = deployed
    test_set = _upload(alice_api, SAMPLES / "test.jsonl")
    evaluation, queued = check_parity(
        alice_api,
        model,
        django_capture_on_commit_callbacks,
        {"test_set_path": test_set["path"], "max_examples": 4},
        execute=False,
    )
    checked_digest = model.ollama_digest
    deploy(alice_api, model, django_capture_on_commit_callbacks, "contracts-ft-2")  # redeployed meanwhile
    assert model.ollama_digest != checked_digest
    for callback in queued:
        callback()

    evaluation.refresh_from_db()
    assert evaluation.status == "completed", evaluation.error_message
    report = evaluation.results["parity"]
    assert report["digest"] == checked_digest and report["deployed"] == "contracts-ft"
    assert report["drifted"] is True and report["recorded"] is False
    assert "no longer live" in report["not_recorded_reason"]
    model.refresh_from_db()
    assert model.deploy_parity == {}
    assert alice_api.get(f"/api/v1/models/{model.id}").json()["model"]["deployment"]["drifted"] is None
    assert "data-parity-stale" in alice_browser.get(f"/evaluations/{evaluation.id}/").content.decode()
