"""Sweeps of chat/instruction fine-tunes: ranked by a generation metric of a generation test set.

The trials' evaluations are generations (each answer scored against its reference), and their paired t-test
p-values are Holm-adjusted as McNemar's are for a classification.
"""

import pytest

from evaluations.models import Evaluation
from jobs.models import Job
from sweeps import selectors
from sweeps.models import Sweep, SweepTrial
from tests.factories import make_dataset, tool_call_records

from .conftest import sweep_body

API = "/api/v1/sweeps"


def _body(dataset, **overrides):
    return sweep_body(dataset, **{"name": "chat", **overrides})


def test_a_generation_sweep_evaluates_each_trial_as_generation_and_ranks_by_token_f1_with_holm(
    alice_api, instruction_set, generation_ollama, local_storage, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_api.post(API, _body(instruction_set, metric="token_f1"), format="json")
    assert response.status_code == 201, response.content
    body = alice_api.get(f"{API}/{response.json()['id']}").json()
    assert body["status"] == "completed" and body["metric"] == "token_f1"
    assert [t["state"] for t in body["trials"]] == ["evaluated"] * 4
    evaluations = Evaluation.objects.filter(id__in=[t["evaluation"] for t in body["trials"]])
    assert {e.config["task"] for e in evaluations} == {"generation"}
    assert {e.results["task"] for e in evaluations} == {"generation"}
    ranking = body["ranking"]
    assert (ranking["metric"], ranking["test"], ranking["correction"]) == ("token_f1", "paired t-test", "holm")
    assert ranking["evaluated"] == 4
    # Odd versions answer every question (+2/3 token F1 over the base), even ones like the base (+0).
    assert [row["version"] % 2 for row in ranking["ranking"]] == [1, 1, 0, 0]
    by_version = {e.model.version: e.results for e in evaluations}
    for row in ranking["ranking"]:
        compared = by_version[row["version"]]["comparisons"]["token_f1"]
        assert (row["delta"], row["ci_low"], row["ci_high"]) == (
            compared["delta"],
            compared["ci_low"],
            compared["ci_high"],
        )
        assert row["p_value"] == compared["p_value"]
        assert row["score"] == by_version[row["version"]]["fine_tuned"]["token_f1"]
    best = ranking["best"]
    assert best["score"] == 1.0 and best["delta"] == pytest.approx(2 / 3, abs=1e-6)
    adjusted = selectors.holm_adjust([row["p_value"] for row in ranking["ranking"]])
    assert [row["p_holm"] for row in ranking["ranking"]] == [round(p, 6) for p in adjusted]
    assert 0 < best["p_value"] < best["p_holm"] < 0.05
    assert [row["better_than_base"] for row in ranking["ranking"]] == [True, True, False, False]
    assert Job.objects.filter(sweep_trial__sweep_id=body["id"], status="succeeded").count() == 4


def test_a_generation_evaluation_without_a_p_value_is_not_ranked(
    alice_api, instruction_set, generation_ollama, local_storage, django_capture_on_commit_callbacks
):
    """Generation evaluations completed before their comparisons carried a paired t-test have no p to adjust."""
    body = _body(instruction_set, metric="rouge_l", search_space={"epochs": [1, 2]})
    with django_capture_on_commit_callbacks(execute=True):
        sweep_id = alice_api.post(API, body, format="json").json()["id"]
    assert alice_api.get(f"{API}/{sweep_id}").json()["ranking"]["evaluated"] == 2
    older = SweepTrial.objects.get(sweep_id=sweep_id, index=1).evaluation
    for compared in older.results["comparisons"].values():
        del compared["p_value"]
    older.save(update_fields=["results"])
    ranking = alice_api.get(f"{API}/{sweep_id}").json()["ranking"]
    assert ranking["evaluated"] == 1 and [row["trial"] for row in ranking["ranking"]] == [2]


def test_with_a_champion_the_trials_are_compared_with_it_as_generations_too(
    alice, alice_api, instruction_set, generation_ollama, local_storage, django_capture_on_commit_callbacks
):
    from models_app import registry
    from models_app import services as model_services

    champion = model_services.model_create(
        owner=alice, name="chat-v1", base_model="llama3.2:3b", registered_name="chat"
    )
    registry.alias_move(registered_name=champion.registered_name, alias="champion", version=1, moved_by=alice)
    with django_capture_on_commit_callbacks(execute=True):
        sweep_id = alice_api.post(API, _body(instruction_set, search_space={"epochs": [1]}), format="json").json()["id"]
    (trial,) = SweepTrial.objects.filter(sweep_id=sweep_id).select_related("champion_evaluation")
    assert trial.champion_evaluation.base_model_name == "chat-v1"
    assert trial.champion_evaluation.config["task"] == "generation"
    assert trial.champion_evaluation.status == "completed"


def test_an_unknown_metric_is_a_400_naming_the_comparable_ones_and_queues_nothing(
    alice_api, instruction_set, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = alice_api.post(API, _body(instruction_set, metric="bleu"), format="json")
    assert response.status_code == 400, response.content
    assert response.json()["errors"]["metric"] == [
        "must be one of accuracy, f1_macro, exact_match, token_f1, rouge_l, chrf"
    ]
    assert callbacks == []
    assert not Sweep.objects.exists() and not Job.objects.exists()


def test_a_classification_metric_on_instruction_records_ranks_trials_evaluated_as_classifications(
    alice_api, instruction_set, generation_ollama, local_storage, django_capture_on_commit_callbacks
):
    """The sample's case: instruction records whose answers are labels, swept by accuracy."""
    body = _body(instruction_set, metric="accuracy", search_space={"epochs": [1, 2]})
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_api.post(API, body, format="json")
    assert response.status_code == 201, response.content
    sweep = alice_api.get(f"{API}/{response.json()['id']}").json()
    evaluations = Evaluation.objects.filter(id__in=[t["evaluation"] for t in sweep["trials"]])
    assert {e.config["task"] for e in evaluations} == {"classification"} and evaluations.count() == 2
    assert (sweep["ranking"]["metric"], sweep["ranking"]["test"]) == ("accuracy", "mcnemar")


@pytest.fixture
def tool_call_set(alice, local_storage):
    """A test set stopping at the call in 5 of its 6 records (like samples/tools/test.jsonl)."""
    return make_dataset(alice, rows=tool_call_records(calls=5, texts=1), filename="weather.jsonl")


@pytest.fixture
def tool_results_set(alice, local_storage):
    """Tool-calling records answered in text after the result in 4 of 6 (like samples/tools/train.jsonl)."""
    return make_dataset(alice, rows=tool_call_records(calls=2, texts=4), filename="weather.jsonl")


@pytest.mark.parametrize(
    ("dataset_fixture", "metric"),
    [
        ("instruction_set", "token_f1"),
        ("training_set", "accuracy"),
        # Mostly answered by calls: exact_match, as the evaluation's headline (token overlap of the calls' JSON
        # credits its keys alone).
        ("tool_call_set", "exact_match"),
        ("tool_results_set", "token_f1"),
    ],
)
def test_with_no_metric_the_test_sets_task_chooses_the_default(
    request, alice_api, dataset_fixture, metric, django_capture_on_commit_callbacks
):
    dataset = request.getfixturevalue(dataset_fixture)
    for given in ({}, {"metric": None}, {"metric": ""}):
        with django_capture_on_commit_callbacks(execute=False):
            response = alice_api.post(API, _body(dataset, registered_name="", **given), format="json")
        assert response.status_code == 201, response.content
        assert response.json()["metric"] == metric and response.json()["ranking"]["metric"] == metric


def test_the_sweep_form_offers_every_metric_by_task_keeps_the_choice_and_the_page_names_the_test(
    alice_browser, instruction_set, generation_ollama, local_storage, django_capture_on_commit_callbacks
):
    page = alice_browser.get("/sweeps/").content.decode()
    assert (
        '<optgroup label="classification"><option>accuracy</option><option>f1_macro</option></optgroup>'
        '<optgroup label="generation"><option>exact_match</option><option>token_f1</option>'
        "<option>rouge_l</option><option>chrf</option></optgroup>"
    ) in page
    form = {
        "name": "chat from the page",
        "trainer": "example",
        "dataset": instruction_set.id,
        "base_model": "llama3.2:3b",
        "strategy": "grid",
        "search_space": '{"epochs": [1, 2]}',
        "concurrency": "2",
        "test_set_path": instruction_set.path,
        "endpoint": "ollama",
        "registered_name": "chat",
        "metric": "chrf",
    }
    refused = alice_browser.post("/sweeps/", {**form, "search_space": '{"epochs": [1'})
    assert refused.status_code == 400 and "<option selected>chrf</option>" in refused.content.decode()
    assert not Sweep.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_browser.post("/sweeps/", form)
    assert response.status_code == 302, response.content.decode()[:500]
    assert Sweep.objects.get().metric == "chrf"
    detail = alice_browser.get(response["Location"]).content.decode()
    assert (
        "<dd data-metric>chrf (a generation metric); p-values from a paired t-test, "
        "Holm-adjusted over the evaluated trials</dd>"
    ) in detail
    assert detail.count("data-trial=") == 2 and detail.count("<circle") == 2


def test_promoting_the_best_of_a_generation_sweep_goes_through_a_token_f1_gate(
    alice_api, instruction_set, generation_ollama, local_storage, django_capture_on_commit_callbacks
):
    from models_app.models import ModelAlias

    with django_capture_on_commit_callbacks(execute=True):
        sweep_id = alice_api.post(API, _body(instruction_set), format="json").json()["id"]
    gate = {"test_set_path": instruction_set.path, "threshold": 0.9}
    assert alice_api.put("/api/v1/registry/chat/gate", gate, format="json").json()["metric"] == "token_f1"
    refused = alice_api.post(f"{API}/{sweep_id}/promote")  # +2/3 token F1 is not above 0.9
    assert refused.status_code == 409 and "token_f1 improvement" in refused.json()["evidence"]["reason"]
    alice_api.put("/api/v1/registry/chat/gate", {**gate, "threshold": 0.2}, format="json")
    promoted = alice_api.post(f"{API}/{sweep_id}/promote")
    assert promoted.status_code == 200, promoted.content
    best = alice_api.get(f"{API}/{sweep_id}").json()["ranking"]["best"]["version"]
    assert ModelAlias.objects.get(registered_name__name="chat", alias="champion").model.version == best
