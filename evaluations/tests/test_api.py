import csv
import io

import pytest

from evaluations.models import Evaluation, Prediction


def evaluate(api, model, dataset_or_path, **extra):
    path = dataset_or_path if isinstance(dataset_or_path, str) else dataset_or_path.path
    body = {"test_set_path": path, "base_model_name": "llama3.2:3b", **extra}
    return api.post(f"/api/v1/models/{model.id}/evaluate", body, format="json")


@pytest.fixture
def completed(alice, alice_api, make_model, make_test_set, trained_ollama, django_capture_on_commit_callbacks):
    model = make_model(alice)
    dataset = make_test_set(alice)
    with django_capture_on_commit_callbacks(execute=True):
        response = evaluate(alice_api, model, dataset)
    assert response.status_code == 202, response.content
    return Evaluation.objects.get(id=response.json()["evaluation_id"])


def test_it_accepts_the_seed_request_and_runs_to_completed_results(completed, trained_ollama):
    evaluation = completed
    assert evaluation.status == "completed", evaluation.error_message
    assert evaluation.fine_tuned_name == "contracts-ft"  # defaulted from the model's name
    assert evaluation.progress == {"done": 24, "total": 24}
    results = evaluation.results
    assert results["base"]["accuracy"] == pytest.approx(4 / 12, abs=1e-6)
    assert results["fine_tuned"]["accuracy"] == 1.0
    assert results["improvement"]["accuracy"] == pytest.approx(1 - 4 / 12, abs=1e-6)
    assert results["significance"]["verdict"] == "significant improvement"
    assert len(evaluation.examples) == 12 and evaluation.examples[0]["outcome"] == "fixed"
    assert Prediction.objects.filter(evaluation=evaluation).count() == 24
    sent = trained_ollama.chat_requests()[0].body
    assert sent["stream"] is False
    assert sent["options"]["temperature"] == 0 and sent["options"]["seed"] == 42
    assert sent["format"]["properties"]["label"]["enum"] == ["negative", "neutral", "positive"]


def test_it_returns_the_seed_response_shape(alice, alice_api, make_model, make_test_set, ollama_server):
    response = evaluate(alice_api, make_model(alice), make_test_set(alice))
    assert response.status_code == 202
    body = response.json()
    assert set(body) >= {"evaluation_id", "status", "message"}
    assert body["status"] == "pending"


def test_it_updates_the_models_eval_results_and_publishes_events(completed):
    completed.model.refresh_from_db()
    summary = completed.model.eval_results
    assert summary["evaluation_id"] == completed.id
    assert summary["verdict"] == "significant improvement"
    assert summary["fine_tuned"]["accuracy"] == 1.0
    import json

    from django_eventstream.models import Event

    stored = Event.objects.filter(channel=f"user-{completed.owner_id}", type="evaluation")
    events = [json.loads(e.data) for e in stored]
    # send_event JSON-encodes the payload and the model storage encodes that string again.
    events = [json.loads(e) if isinstance(e, str) else e for e in events]
    assert any(e["status"] == "completed" and e["id"] == completed.id for e in events)


def test_it_compares_more_than_two_candidates(
    alice, alice_api, make_model, make_test_set, trained_ollama, django_capture_on_commit_callbacks
):
    trained_ollama.add_model("contracts-ft-v2", answer="positive")
    with django_capture_on_commit_callbacks(execute=True):
        response = evaluate(
            alice_api, make_model(alice), make_test_set(alice), fine_tuned_names=["contracts-ft", "contracts-ft-v2"]
        )
    evaluation = Evaluation.objects.get(id=response.json()["evaluation_id"])
    assert evaluation.status == "completed", evaluation.error_message
    results = evaluation.results
    assert set(results["candidates"]) == {"llama3.2:3b", "contracts-ft", "contracts-ft-v2"}
    assert results["fine_tuned"]["model"] == "contracts-ft"  # the seed's shape, headlining the best candidate
    assert results["comparisons"]["contracts-ft-v2"]["improvement"]["accuracy"] == 0.0
    assert results["best_fine_tuned"] == "contracts-ft"


def test_a_multi_candidate_evaluation_headlines_its_best_candidate(best_listed_last, alice_api):
    results = best_listed_last.results
    assert results["best_fine_tuned"] == "probe-tuned"
    assert results["headline"] == {
        "model": "probe-tuned",
        "metric": "accuracy",
        "tie_breaker": "f1_macro",
        "ranking": ["probe-tuned", "probe-base:latest"],
    }
    assert results["fine_tuned"] == results["candidates"]["probe-tuned"]
    assert results["improvement"] == results["comparisons"]["probe-tuned"]["improvement"]
    assert results["significance"] == results["comparisons"]["probe-tuned"]["significance"]
    assert results["significance"]["verdict"] == "significant improvement"
    assert results["improvement"]["accuracy"] == pytest.approx(1 - 4 / 12, abs=1e-6)
    # Every candidate's own verdict is still there.
    assert results["comparisons"]["probe-base:latest"]["significance"]["verdict"] == "not significant"
    # The examples compare the base with the headline candidate.
    assert best_listed_last.examples[0]["outcome"] == "fixed"
    assert all(example["fine_tuned_correct"] for example in best_listed_last.examples)

    listed = alice_api.get("/api/v1/evaluations").json()["results"][0]["summary"]
    assert listed["verdict"] == "significant improvement"
    assert listed["fine_tuned_model"] == "probe-tuned" and listed["fine_tuned_accuracy"] == 1.0
    assert listed["accuracy_delta"] == results["improvement"]["accuracy"]
    best_listed_last.model.refresh_from_db()
    summary = best_listed_last.model.eval_results
    assert summary["fine_tuned"]["model"] == "probe-tuned" and summary["verdict"] == "significant improvement"


def test_fine_tuned_name_repeated_in_fine_tuned_names_is_one_candidate(
    alice, alice_api, make_model, make_test_set, trained_ollama
):
    # Defect 12: the seed's field and the list naming the same model was a 400 "must be a different model".
    trained_ollama.add_model("contracts-ft-v2", answer="positive")
    response = evaluate(
        alice_api,
        make_model(alice),
        make_test_set(alice),
        fine_tuned_name="contracts-ft",
        fine_tuned_names=["contracts-ft-v2", "contracts-ft"],
    )
    assert response.status_code == 202, response.content
    evaluation = Evaluation.objects.get(id=response.json()["evaluation_id"])
    assert evaluation.candidates == ["llama3.2:3b", "contracts-ft", "contracts-ft-v2"]
    assert evaluation.fine_tuned_name == "contracts-ft"


def test_a_name_and_its_latest_tag_are_one_model_asked_once(
    alice, alice_api, make_model, make_test_set, trained_ollama, django_capture_on_commit_callbacks
):
    # Defect 12: Ollama resolves "contracts-ft" as "contracts-ft:latest"; both were asked, twice the work.
    with django_capture_on_commit_callbacks(execute=True):
        response = evaluate(
            alice_api, make_model(alice), make_test_set(alice), fine_tuned_names=["contracts-ft", "contracts-ft:latest"]
        )
    assert response.status_code == 202, response.content
    evaluation = Evaluation.objects.get(id=response.json()["evaluation_id"])
    assert evaluation.status == "completed", evaluation.error_message
    assert evaluation.candidates == ["llama3.2:3b", "contracts-ft"]  # the first spelling is kept
    assert len(trained_ollama.chat_requests(model="contracts-ft")) == 12  # once per example
    assert "candidates" not in evaluation.results  # a pair, in the seed's shape
    assert evaluation.results["fine_tuned"]["model"] == "contracts-ft"


def test_it_lists_and_filters_evaluations(alice, alice_api, make_model, make_test_set, ollama_server):
    model, other_model = make_model(alice), make_model(alice, name="other")
    dataset = make_test_set(alice)
    first = evaluate(alice_api, model, dataset).json()["evaluation_id"]
    evaluate(alice_api, other_model, dataset)
    response = alice_api.get(f"/api/v1/evaluations?model={model.id}&status=pending")
    assert response.status_code == 200
    assert [item["id"] for item in response.json()["results"]] == [first]
    assert alice_api.get("/api/v1/evaluations?status=done").status_code == 400
    assert alice_api.get("/api/v1/evaluations?model=abc").status_code == 400


def test_the_list_costs_the_same_queries_whatever_its_length(
    alice, alice_api, make_model, make_test_set, ollama_server, django_assert_max_num_queries
):
    model, dataset = make_model(alice), make_test_set(alice)
    for _ in range(15):
        evaluate(alice_api, model, dataset)
    with django_assert_max_num_queries(4):
        response = alice_api.get("/api/v1/evaluations?page_size=15")
    assert len(response.json()["results"]) == 15


def test_it_edits_only_the_name_and_note(completed, alice_api):
    url = f"/api/v1/evaluations/{completed.id}"
    response = alice_api.put(url, {"name": "Q3 contracts", "note": "good run"}, format="json")
    assert response.status_code == 200
    assert response.json()["name"] == "Q3 contracts"
    refused = alice_api.put(url + "/", {"results": {}, "status": "pending"}, format="json")
    assert refused.status_code == 400
    assert set(refused.json()["errors"]) == {"results", "status"}
    completed.refresh_from_db()
    assert completed.results["fine_tuned"]["accuracy"] == 1.0 and completed.status == "completed"


def test_it_cancels_a_pending_evaluation_once(alice, alice_api, make_model, make_test_set, ollama_server):
    evaluation_id = evaluate(alice_api, make_model(alice), make_test_set(alice)).json()["evaluation_id"]
    response = alice_api.post(f"/api/v1/evaluations/{evaluation_id}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    again = alice_api.post(f"/api/v1/evaluations/{evaluation_id}/cancel/")
    assert again.status_code == 409
    assert "already cancelled" in again.json()["detail"]


def test_it_exports_every_prediction_as_csv_and_json(completed, alice_api):
    response = alice_api.get(f"/api/v1/evaluations/{completed.id}/export.csv", HTTP_ACCEPT="text/csv")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert len(rows) == 24
    assert {row["role"] for row in rows} == {"base", "fine_tuned"}
    as_json = alice_api.get(f"/api/v1/evaluations/{completed.id}/export.json")
    assert as_json.status_code == 200
    body = as_json.json()
    assert len(body["predictions"]) == 24 and body["evaluation"]["id"] == completed.id


def test_it_neutralises_formulas_in_csv_exports(completed, alice_api):
    Prediction.objects.filter(evaluation=completed, index=0).update(prediction_text='=HYPERLINK("http://x")')
    text = alice_api.get(f"/api/v1/evaluations/{completed.id}/export.csv").content.decode()
    assert "'=HYPERLINK" in text


# --- owner isolation -------------------------------------------------------------------------------
def test_bob_cannot_see_or_touch_alices_evaluation(completed, bob_api, bob, make_test_set):
    for url in (
        f"/api/v1/evaluations/{completed.id}",
        f"/api/v1/evaluations/{completed.id}/export.csv",
        f"/api/v1/evaluations/{completed.id}/export.json",
    ):
        assert bob_api.get(url).status_code == 404, url
    assert bob_api.post(f"/api/v1/evaluations/{completed.id}/cancel").status_code == 404
    assert bob_api.put(f"/api/v1/evaluations/{completed.id}", {"name": "x"}, format="json").status_code == 404
    assert bob_api.get("/api/v1/evaluations").json()["results"] == []
    response = evaluate(bob_api, completed.model, make_test_set(bob))
    assert response.status_code == 404


def test_staff_see_everyones_evaluations(completed, olivia_api):
    assert olivia_api.get(f"/api/v1/evaluations/{completed.id}").status_code == 200
    assert [e["id"] for e in olivia_api.get("/api/v1/evaluations").json()["results"]] == [completed.id]


def test_anonymous_requests_get_401(completed, anon_api):
    assert anon_api.get("/api/v1/evaluations").status_code == 401
    assert anon_api.get(f"/api/v1/evaluations/{completed.id}").status_code == 401
    assert anon_api.post(f"/api/v1/models/{completed.model_id}/evaluate", {}, format="json").status_code == 401


# --- test_set_path and bad test sets ---------------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    [
        "../etc/passwd",
        "datasets/users/{me}/../{bob}/datasets/x/test.jsonl",
        "/datasets/users/{me}/datasets/x/test.jsonl",
        "datasets\\users\\{me}\\test.jsonl",
        "datasets/users/{me}/%2e%2e/{bob}/test.jsonl",
        "datasets/users/{me}/%252e%252e/test.jsonl",
        "datasets/users/{me}/datasets/x/test.jsonl\x00",
        "datasets/users/{bob}/datasets/x/test.jsonl",
        "users/{me}/datasets/x/test.jsonl",
        "s3://datasets/users/{me}/test.jsonl",
        "",
    ],
)
def test_it_refuses_hostile_test_set_paths_before_touching_storage(
    path, alice, bob, alice_api, make_model, ollama_server, storage_spy
):
    model = make_model(alice)
    response = evaluate(alice_api, model, path.format(me=alice.id, bob=bob.id))
    assert response.status_code == 400, response.content
    assert "test_set_path" in response.json()["errors"]
    assert not Evaluation.objects.exists()
    assert storage_spy.connections == 0  # refused before any storage call


def test_it_refuses_another_users_dataset_path(alice, bob, alice_api, make_model, make_test_set, ollama_server):
    bobs = make_test_set(bob)
    response = evaluate(alice_api, make_model(alice), bobs)
    assert response.status_code == 400
    assert "one of your datasets" in response.json()["errors"]["test_set_path"][0]


def test_it_accepts_a_raw_object_under_the_users_own_prefix(alice, alice_api, make_model, ollama_server):
    from finetune_studio.objects import bucket

    key = f"users/{alice.id}/datasets/manual/test.csv"
    bucket("datasets").put_bytes(key, b"text,label\nhello,a\nbye,b\n")
    assert evaluate(alice_api, make_model(alice), f"datasets/{key}").status_code == 202
    missing = evaluate(alice_api, make_model(alice), f"datasets/users/{alice.id}/datasets/manual/none.csv")
    assert missing.status_code == 400
    assert "no such object" in missing.json()["errors"]["test_set_path"][0]


def test_it_refuses_an_empty_test_set_at_creation(alice, alice_api, make_model, make_test_set, ollama_server):
    response = evaluate(alice_api, make_model(alice), make_test_set(alice, [], raw=b""))
    assert response.status_code == 400
    assert "no records" in response.json()["errors"]["test_set_path"][0]


def test_it_refuses_labels_that_miss_the_test_sets_labels(alice, alice_api, make_model, make_test_set, ollama_server):
    response = evaluate(alice_api, make_model(alice), make_test_set(alice), labels=["positive", "negative"])
    assert response.status_code == 400
    assert "neutral" in response.json()["errors"]["labels"][0]


@pytest.mark.parametrize(
    "extra, field",
    [
        ({"base_model_name": ""}, "base_model_name"),
        ({"base_model_name": "bad name; rm -rf"}, "base_model_name"),
        ({"fine_tuned_name": "llama3.2:3b"}, "fine_tuned_names"),
        ({"base_model_name": "contracts-ft", "fine_tuned_names": ["contracts-ft:latest"]}, "fine_tuned_names"),
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": "many"}, "concurrency"),
        ({"prompt_template": "no placeholder"}, "prompt_template"),
        ({"labels": ["only-one"]}, "labels"),
        ({"max_examples": -1}, "max_examples"),
    ],
)
def test_it_refuses_bad_options_with_a_reason(extra, field, alice, alice_api, make_model, make_test_set, ollama_server):
    response = evaluate(alice_api, make_model(alice), make_test_set(alice), **extra)
    assert response.status_code == 400, response.content
    assert field in response.json()["errors"]


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b'{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n{not json}\n', "line 3"),
        (b'{"text": "a", "label": "x"}\n{"text": "b"}\n', "or 'text' and 'label' (found: "),
        (b'{"text": "a", "label": "x"}\n{"text": "b", "label": "x"}\n', "at least two labels"),
    ],
)
def test_a_test_set_bad_inside_fails_the_evaluation_with_the_reason(
    raw, reason, alice, alice_api, make_model, make_test_set, ollama_server, django_capture_on_commit_callbacks
):
    # The upload validation did not catch it (labels unknown): the worker finds out and says why.
    dataset = make_test_set(alice, [{"text": "a", "label": "x"}] * 3, raw=raw, labels=[])
    with django_capture_on_commit_callbacks(execute=True):
        response = evaluate(alice_api, make_model(alice), dataset)
    evaluation = Evaluation.objects.get(id=response.json()["evaluation_id"])
    assert evaluation.status == "failed"
    assert reason in evaluation.error_message
    assert ollama_server.chat_requests() == []
