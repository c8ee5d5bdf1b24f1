"""The parity check's request: what it refuses (with the reason, creating nothing) and who may ask.

The check itself, with the real engine against an Ollama test server, is in test_parity_loop.py.
"""

import pytest

from evaluations.models import Evaluation
from models_app.tests.conftest import adapter_files
from tests.factories import make_model

pytestmark = pytest.mark.django_db

DIGEST = "a" * 64


@pytest.fixture
def deployed_model(alice):
    return make_model(
        alice,
        files=adapter_files(),
        name="contracts",
        base_model="demo-base",
        ollama_name="contracts-ft",
        ollama_digest=DIGEST,
    )


def post(api, model, body):
    return api.post(f"/api/v1/models/{model.id}/parity", body, format="json")


def test_a_model_without_a_live_deployment_is_refused_saying_to_deploy_first(alice, alice_api, make_test_set):
    model = make_model(alice, files=adapter_files(), base_model="demo-base")
    response = post(alice_api, model, {"test_set_path": make_test_set(alice).path})
    assert response.status_code == 400
    assert "deploy it to Ollama first" in response.json()["errors"]["model"][0]
    assert not Evaluation.objects.exists()


def test_bob_gets_404_on_alices_model_and_nothing_is_created(bob_api, deployed_model, make_test_set, alice):
    response = post(bob_api, deployed_model, {"test_set_path": make_test_set(alice).path})
    assert response.status_code == 404
    assert not Evaluation.objects.exists()


HOSTILE_VARIANTS = {
    "a URL": ["http://169.254.169.254/latest"],
    "a traversal": ["contracts-ft:../../etc"],
    "a path": ["/etc/passwd"],
    "another repository's tag": ["llama3.2:q8_0"],
    "the live deployment itself": ["contracts-ft:latest"],
    "no tag": ["contracts-ft"],
    "a control character": ["contracts-ft:q8_0\u0000"],
    "named twice": ["contracts-ft:q8_0", "contracts-ft:q8_0"],
    "too many": [f"contracts-ft:q{n}" for n in range(5)],
    "not a list": "contracts-ft:q8_0",
    "not strings": [{"name": "contracts-ft:q8_0"}],
    "too long": ["contracts-ft:" + "q" * 300],
}


@pytest.mark.parametrize("variants", HOSTILE_VARIANTS.values(), ids=HOSTILE_VARIANTS.keys())
def test_hostile_variants_get_a_400_naming_the_field_and_create_nothing(
    alice, alice_api, deployed_model, make_test_set, variants
):
    response = post(alice_api, deployed_model, {"test_set_path": make_test_set(alice).path, "variants": variants})
    assert response.status_code == 400, response.content
    assert "variants" in response.json()["errors"], response.json()
    assert not Evaluation.objects.exists()


@pytest.mark.parametrize(
    "field, value",
    [
        ("endpoint", "http://169.254.169.254"),
        ("fine_tuned_endpoint", "openai"),
        ("base_model_name", "/etc"),
        ("fine_tuned_names", ["someone-elses-model"]),
        ("ollama_url", "http://evil.example"),
    ],
)
def test_a_parity_check_never_takes_candidates_endpoints_or_urls_from_the_request(
    alice, alice_api, deployed_model, make_test_set, field, value
):
    response = post(alice_api, deployed_model, {"test_set_path": make_test_set(alice).path, field: value})
    assert response.status_code == 400
    assert "not a parity check field" in response.json()["errors"][field][0]
    assert not Evaluation.objects.exists()


@pytest.mark.parametrize("path", ["../../etc/passwd", "/etc/passwd", "datasets/users/999/x.jsonl", "", "%2e%2e/x"])
def test_a_hostile_test_set_path_is_refused(alice_api, deployed_model, path):
    response = post(alice_api, deployed_model, {"test_set_path": path})
    assert response.status_code == 400
    assert "test_set_path" in response.json()["errors"]
    assert not Evaluation.objects.exists()


def test_the_page_form_explains_what_is_missing_and_refuses_with_the_reason(alice, alice_browser, make_test_set):
    model = make_model(alice, files=adapter_files(), base_model="demo-base")
    test_set = make_test_set(alice)
    page = alice_browser.get(f"/models/{model.id}/parity/")
    assert page.status_code == 200 and "no live Ollama deployment" in page.content.decode()
    refused = alice_browser.post(f"/models/{model.id}/parity/", {"test_set_path": test_set.path})
    assert refused.status_code == 400 and "deploy it to Ollama first" in refused.content.decode()
    assert not Evaluation.objects.exists()
    # The model page offers the check only with a live deployment.
    assert "data-parity-check" not in alice_browser.get(f"/models/{model.id}/").content.decode()


def _answers(candidate: str, labels: list[str], expected: list[str], texts: list[str] | None = None):
    from evaluations.engine import Prediction

    return [
        Prediction(
            index=index,
            candidate=candidate,
            expected=truth,
            input_text=f"clause {index}",
            prediction_text=(texts[index] if texts else label) or "",
            parsed_label=label,
            correct=label == truth,
        )
        for index, (label, truth) in enumerate(zip(labels, expected, strict=True))
    ]


@pytest.mark.parametrize("broken, drifted", [(0, False), (1, False), (2, True)])
def test_the_deployment_drifts_only_when_its_accuracy_drops_beyond_the_bound(broken, drifted):
    """50 examples, the adapter right on all: one answer broken is a 0.02 drop (the bound itself), two are 0.04."""
    from evaluations import metrics, parity

    expected = ["payment_terms" if index % 2 else "termination" for index in range(50)]
    deployed = [("governing_law" if index < broken else label) for index, label in enumerate(expected)]
    predictions = _answers("local", expected, expected) + _answers("contracts-ft", deployed, expected)
    candidates = ["local", "contracts-ft"]
    results, _examples = metrics.compute_results(predictions, labels=sorted(set(expected)), candidates=candidates)
    report = parity.parity_report(predictions, candidates=candidates, results=results, plan={"max_drop": 0.02})
    assert report["drifted"] is drifted
    assert report["agreement"] == (50 - broken) / 50
    assert [item["index"] for item in report["candidates"][0]["changed"]] == list(range(broken))
    assert report["candidates"][0]["difference"]["accuracy"] == -broken / 50


def test_two_unparsed_answers_agree_only_when_their_normalised_text_does():
    from evaluations import metrics, parity

    expected = ["termination", "payment_terms"] * 3
    local = _answers("local", [None, *expected[1:]], expected, texts=["I cannot say.", *expected[1:]])
    same = _answers("contracts-ft", [None, *expected[1:]], expected, texts=["i CANNOT say", *expected[1:]])
    other = _answers("contracts-ft:q4_K_M", [None, *expected[1:]], expected, texts=["No idea", *expected[1:]])
    candidates = ["local", "contracts-ft", "contracts-ft:q4_K_M"]
    results, _ = metrics.compute_results(
        local + same + other, labels=["payment_terms", "termination"], candidates=candidates
    )
    report = parity.parity_report(local + same + other, candidates=candidates, results=results, plan={})
    assert [row["agreement"] for row in report["candidates"]] == [1.0, pytest.approx(5 / 6, abs=1e-6)]
    assert report["candidates"][1]["changed"][0]["deployed_answer"] == "No idea"


def _generated(candidate: str, answers: list[str], references: list[str]):
    from evaluations.engine import Prediction
    from evaluations.generation import score_one

    return [
        Prediction(
            index=index,
            candidate=candidate,
            expected=reference,
            input_text=f"question {index}",
            prediction_text=answer,
            parsed_label=None,
            correct=answer == reference,
            scores=score_one(answer, reference, schema=None),
        )
        for index, (answer, reference) in enumerate(zip(answers, references, strict=True))
    ]


@pytest.mark.parametrize("broken, drifted", [(0, False), (1, False), (2, True)])
def test_a_generation_deployment_drifts_only_when_its_token_f1_drops_beyond_the_bound(broken, drifted):
    """50 answers, the adapter's all right: one answer lost is a 0.02 token-F1 drop (the bound), two are 0.04;
    an answer that differs only in case and spacing is the same answer."""
    from evaluations import generation, parity

    references = [f"the notice period is {index} days" for index in range(50)]
    local = _generated("local", references, references)
    deployed_answers = [
        "I cannot help with that." if index < broken else reference.upper() + "  "
        for index, reference in enumerate(references)
    ]
    deployed = _generated("contracts-ft", deployed_answers, references)
    candidates = ["local", "contracts-ft"]
    results, _examples = generation.compute_results(local + deployed, candidates=candidates)
    report = parity.parity_report(local + deployed, candidates=candidates, results=results, plan={"max_drop": 0.02})
    row = report["candidates"][0]
    assert (report["task"], report["primary_metric"], report["drifted"]) == ("generation", "token_f1", drifted)
    assert report["agreement"] == (50 - broken) / 50
    assert [item["index"] for item in row["changed"]] == list(range(broken))
    assert row["difference"]["token_f1"] == pytest.approx(-broken / 50)
    assert row["mcnemar"] is None and "McNemar" not in report["summary"]
    assert all(item["local_correct"] and not item["deployed_correct"] for item in row["changed"])


def test_a_generation_variant_is_compared_with_the_adapter_like_the_deployment_and_never_marks_it():
    from evaluations import generation, parity

    references = [f"pay within {index} days" for index in range(20)]
    local = _generated("local", references, references)
    deployed = _generated("contracts-ft", references, references)
    variant = _generated("contracts-ft:q4_K_M", ["no"] * 5 + references[5:], references)
    candidates = ["local", "contracts-ft", "contracts-ft:q4_K_M"]
    predictions = local + deployed + variant
    results, _examples = generation.compute_results(predictions, candidates=candidates)
    report = parity.parity_report(predictions, candidates=candidates, results=results, plan={"max_drop": 0.02})
    deployed_row, variant_row = report["candidates"]
    assert (deployed_row["agreement"], deployed_row["beyond_bound"], report["drifted"]) == (1.0, False, False)
    assert variant_row["role"] == "variant" and variant_row["agreement"] == 0.75
    assert variant_row["difference"]["token_f1"] == pytest.approx(-0.25) and variant_row["beyond_bound"] is True
