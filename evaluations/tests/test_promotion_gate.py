"""The promotion gate: champion moves only on a completed evaluation whose CI lower bound clears the threshold."""

import pytest

from models_app import services as model_services
from models_app.models import AliasEvent, ModelAlias
from tests.factories import tool_call_records
from tests.support.ollama_server import answer_from_mapping

from .conftest import sample_records

BASE = "/api/v1/registry/contracts"


@pytest.fixture
def gated(alice, alice_api, make_test_set, ollama_server):
    """contracts v1 (answers like the base: always neutral) and v2 (perfect), a gate on accuracy > 0.05."""
    ollama_server.add_model("llama3.2:3b", answer="neutral")
    ollama_server.add_model("contracts-weak", answer="neutral")
    mapping = {record["text"]: record["label"] for record in sample_records(200)}
    ollama_server.add_model("contracts-strong", answer=answer_from_mapping(mapping, default="neutral"))
    for name in ("contracts-weak", "contracts-strong"):
        model_services.model_create(owner=alice, name=name, base_model="llama3.2:3b", registered_name="contracts")
    dataset = make_test_set(alice, sample_records(30))
    gate = alice_api.put(
        f"{BASE}/gate",
        {"test_set_path": dataset.path, "metric": "accuracy", "endpoint": "ollama", "threshold": 0.05},
        format="json",
    )
    assert gate.status_code == 200, gate.content
    return dataset


def _evaluate(client, version: int, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/registry/contracts/versions/{version}/evaluate/")
    assert response.status_code == 302, response.content
    assert response["Location"].startswith("/evaluations/")


def test_without_an_evaluation_the_move_is_a_409_saying_what_is_missing(alice_api, gated):
    response = alice_api.put(f"{BASE}/aliases/champion", {"version": 2}, format="json")
    assert response.status_code == 409
    evidence = response.json()["evidence"]
    assert evidence["passed"] is False and evidence["evaluation_id"] is None
    assert "v2 against the base (llama3.2:3b)" in evidence["missing"][0]
    assert not ModelAlias.objects.exclude(model=None).exists()


def test_after_a_passing_evaluation_against_the_base_the_move_is_allowed_with_the_evidence(
    alice, alice_browser, alice_api, gated, django_capture_on_commit_callbacks
):
    _evaluate(alice_browser, 2, django_capture_on_commit_callbacks)
    response = alice_api.put(f"{BASE}/aliases/champion", {"version": 2}, format="json")
    assert response.status_code == 200, response.content
    event = AliasEvent.objects.get()
    assert event.evidence["passed"] is True
    assert event.evidence["ci_low"] > 0.05 and event.evidence["delta"] == pytest.approx(2 / 3, abs=0.01)
    assert event.evidence["baseline"] == "llama3.2:3b"


def test_a_version_worse_than_the_champion_is_refused_with_the_interval(
    alice_browser, alice_api, gated, django_capture_on_commit_callbacks
):
    _evaluate(alice_browser, 2, django_capture_on_commit_callbacks)
    assert alice_api.put(f"{BASE}/aliases/champion", {"version": 2}, format="json").status_code == 200
    # v1 was never compared against v2 (the champion now): missing evidence first…
    missing = alice_api.put(f"{BASE}/aliases/champion", {"version": 1}, format="json")
    assert missing.status_code == 409 and "against v2 (contracts-strong)" in missing.json()["evidence"]["missing"][0]
    # …then the one-click evaluation against the champion shows a regression.
    _evaluate(alice_browser, 1, django_capture_on_commit_callbacks)
    refused = alice_api.put(f"{BASE}/aliases/champion", {"version": 1, "from_version": 2}, format="json")
    assert refused.status_code == 409
    evidence = refused.json()["evidence"]
    assert evidence["evaluation_id"] is not None and evidence["ci_high"] < 0
    assert "not above the threshold" in evidence["reason"]
    assert ModelAlias.objects.get(alias="champion").model.version == 2


def test_a_gate_on_another_test_set_does_not_count_an_evaluation_on_this_one(
    alice, alice_browser, alice_api, gated, make_test_set, django_capture_on_commit_callbacks
):
    _evaluate(alice_browser, 2, django_capture_on_commit_callbacks)
    other = make_test_set(alice, sample_records(30))
    alice_api.put(f"{BASE}/gate", {"test_set_path": other.path, "metric": "accuracy", "threshold": 0.05}, format="json")
    assert alice_api.put(f"{BASE}/aliases/champion", {"version": 2}, format="json").status_code == 409


def test_staff_override_with_a_reason_is_recorded_and_shown(alice_browser, olivia_api, olivia, gated, client):
    response = olivia_api.put(
        f"{BASE}/aliases/champion?owner={gated.owner_id}",
        {"version": 1, "override_reason": "hotfix: v2 leaks PII"},
        format="json",
    )
    assert response.status_code == 200, response.content
    event = AliasEvent.objects.get()
    assert event.override_reason == "hotfix: v2 leaks PII" and event.evidence["overridden"] is True
    assert event.evidence["passed"] is False and event.moved_by == olivia
    page = alice_browser.get("/registry/contracts/")
    assert b"hotfix: v2 leaks PII" in page.content and b"overridden" in page.content


def test_only_staff_may_override(alice_api, gated):
    response = alice_api.put(f"{BASE}/aliases/champion", {"version": 2, "override_reason": "trust me"}, format="json")
    assert response.status_code == 403
    assert not AliasEvent.objects.exists()


def test_ungated_aliases_move_freely(alice_api, gated):
    assert alice_api.put(f"{BASE}/aliases/candidate", {"version": 1}, format="json").status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"test_set_path": "datasets/users/999/x.jsonl"}, "test_set_path"),
        ({"test_set_path": "../etc/passwd"}, "test_set_path"),
        ({"test_set_path": "{own}", "metric": "bleu"}, "metric"),
        ({"test_set_path": "{own}", "threshold": 3}, "threshold"),
        ({"test_set_path": "{own}", "endpoint": "nowhere"}, "endpoint"),
        ({"test_set_path": "{own}", "endpoint": "http://10.0.0.1:11434"}, "endpoint"),
    ],
)
def test_a_bad_gate_is_a_400_naming_the_field(alice_api, gated, body, field):
    body = {key: (gated.path if value == "{own}" else value) for key, value in body.items()}
    response = alice_api.put(f"{BASE}/gate", body, format="json")
    assert response.status_code == 400
    assert field in response.json()["errors"]


TRANSLATIONS = [
    {"instruction": "Translate into French.", "input": f"word {i}", "output": f"mot {i}"} for i in range(24)
]


@pytest.fixture
def gated_on_translations(alice, alice_api, make_dataset, ollama_server):
    """translations v1 (answers like the base) and v2 (translates), gated on an instruction test set."""
    ollama_server.add_model("llama3.2:3b", answer="je ne sais pas")
    ollama_server.add_model("translations-weak", answer="je ne sais pas")
    mapping = {record["input"]: record["output"] for record in TRANSLATIONS}
    ollama_server.add_model("translations-strong", answer=answer_from_mapping(mapping, default="je ne sais pas"))
    for name in ("translations-weak", "translations-strong"):
        model_services.model_create(owner=alice, name=name, base_model="llama3.2:3b", registered_name="translations")
    dataset = make_dataset(alice, rows=TRANSLATIONS, name="translations-test")
    gate = alice_api.put(
        "/api/v1/registry/translations/gate",
        {"test_set_path": dataset.path, "endpoint": "ollama", "threshold": 0.2},
        format="json",
    )
    assert gate.status_code == 200, gate.content
    return gate.json()


def test_a_gate_on_a_chat_or_instruction_test_set_ranks_by_token_f1_unless_told_otherwise(gated_on_translations):
    assert gated_on_translations["metric"] == "token_f1"


@pytest.mark.parametrize(
    ("calls", "texts", "metric"),
    [(5, 1, "exact_match"), (3, 3, "exact_match"), (1, 5, "token_f1")],
)
def test_a_gate_on_a_test_set_mostly_answered_by_tool_calls_ranks_by_exact_match_unless_told_otherwise(
    alice, alice_api, make_dataset, ollama_server, calls, texts, metric
):
    """Token overlap of the calls' JSON credits its keys alone: "the same calls" is the question such a set asks."""
    model_services.model_create(owner=alice, name="weather", base_model="llama3.2:3b", registered_name="weather")
    dataset = make_dataset(alice, rows=tool_call_records(calls=calls, texts=texts), name="weather-test")
    gate = {"test_set_path": dataset.path, "endpoint": "ollama", "threshold": 0.1}
    response = alice_api.put("/api/v1/registry/weather/gate", gate, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["metric"] == metric
    named = alice_api.put("/api/v1/registry/weather/gate", {**gate, "metric": "token_f1"}, format="json")
    assert named.json()["metric"] == "token_f1"


def test_a_gate_may_name_any_comparable_metric_and_its_evaluation_scores_that_metrics_task(
    alice, alice_api, gated, make_dataset, django_capture_on_commit_callbacks
):
    """Like the sample: instruction records whose answers are labels, gated on accuracy, are evaluated as a
    classification (what an evaluation asked for task classification does on them)."""
    instructions = make_dataset(alice)
    gate = {"test_set_path": instructions.path, "metric": "accuracy", "endpoint": "ollama"}
    assert alice_api.put(f"{BASE}/gate", gate, format="json").json()["metric"] == "accuracy"
    with django_capture_on_commit_callbacks(execute=False):
        started = alice_api.post(f"{BASE}/versions/2/evaluate")
    assert started.status_code == 202, started.content
    assert started.json()["config"]["task"] == "classification"
    unknown = alice_api.put(f"{BASE}/gate", {**gate, "metric": "bleu"}, format="json")
    assert unknown.status_code == 400 and unknown.json()["errors"]["metric"] == ['"bleu" is not a valid choice.']


def test_a_chat_model_is_promoted_on_a_generation_evaluation_and_a_weaker_one_refused_with_the_interval(
    alice_browser, alice_api, gated_on_translations, django_capture_on_commit_callbacks
):
    champion = "/api/v1/registry/translations/aliases/champion"
    for version in (2, 1):
        with django_capture_on_commit_callbacks(execute=True):
            response = alice_browser.post(f"/registry/translations/versions/{version}/evaluate/")
        assert response.status_code == 302, response.content
        if version == 2:
            evaluation = alice_api.get(f"/api/v1{response['Location'].rstrip('/')}").json()
            assert evaluation["results"]["task"] == "generation"
            assert alice_api.put(champion, {"version": 2}, format="json").status_code == 200
    # v1 was asked against the champion (v2) on the same translations: it is worse, and the gate says by how much.
    refused = alice_api.put(champion, {"version": 1, "from_version": 2}, format="json")
    assert refused.status_code == 409
    evidence = refused.json()["evidence"]
    assert evidence["metric"] == "token_f1" and evidence["ci_high"] < 0
    assert "token_f1 improvement" in evidence["reason"] and "not above the threshold" in evidence["reason"]
    passed = AliasEvent.objects.get(to_version=2).evidence
    assert passed["passed"] is True and passed["delta"] == pytest.approx(1.0) and passed["ci_low"] > 0.2


def test_bob_cannot_read_or_set_alices_gate(bob_api, gated):
    assert bob_api.get(f"{BASE}/gate").status_code == 404
    assert bob_api.put(f"{BASE}/gate", {"test_set_path": gated.path}, format="json").status_code == 404


def test_an_integration_starts_the_gates_evaluation_through_the_api_and_then_promotes(
    alice_api, gated, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        started = alice_api.post(f"{BASE}/versions/2/evaluate")
    assert started.status_code == 202, started.content
    assert started.json()["base_model_name"] == "llama3.2:3b"
    assert alice_api.put(f"{BASE}/aliases/champion", {"version": 2}, format="json").status_code == 200
    assert alice_api.post(f"{BASE}/versions/9/evaluate").status_code == 404


def test_bob_cannot_start_an_evaluation_of_alices_version(bob_api, gated):
    assert bob_api.post(f"{BASE}/versions/2/evaluate").status_code == 404
