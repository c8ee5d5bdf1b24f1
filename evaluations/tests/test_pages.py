import re

import pytest

from evaluations.models import Evaluation, Prediction

from .test_api import evaluate


@pytest.fixture
def completed(alice, alice_api, make_model, make_test_set, trained_ollama, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = evaluate(alice_api, make_model(alice), make_test_set(alice))
    return Evaluation.objects.get(id=response.json()["evaluation_id"])


def test_the_list_shows_the_users_evaluations_only(completed, alice_browser, client, bob):
    page = alice_browser.get("/evaluations/")
    assert page.status_code == 200
    assert f'data-evaluation-id="{completed.id}"' in page.content.decode()
    client.force_login(bob)
    assert f'data-evaluation-id="{completed.id}"' not in client.get("/evaluations/").content.decode()


def test_the_detail_page_shows_cards_matrices_examples_and_the_verdict(completed, alice_browser):
    html = alice_browser.get(f"/evaluations/{completed.id}/").content.decode()
    assert "significant improvement" in html
    assert 'class="delta up"' in html and "▲" in html
    assert "unparseable" in html  # the confusion matrix's extra column
    assert 'data-outcome="fixed"' in html
    assert f"/api/v1/evaluations/{completed.id}/export.csv" in html
    assert "evaluations/evaluations.js" in html


def test_the_detail_page_links_its_test_set_and_keeps_the_path_once_the_dataset_is_gone(completed, alice_browser):
    from jobs.models import Dataset

    dataset = Dataset.objects.get(path=completed.test_set_path)
    html = alice_browser.get(f"/evaluations/{completed.id}/").content.decode()
    assert f'<a href="/datasets/{dataset.id}/" data-test-set>{dataset.name}</a>' in html
    assert alice_browser.post(f"/datasets/{dataset.id}/delete/").status_code == 302
    html = alice_browser.get(f"/evaluations/{completed.id}/").content.decode()
    assert "data-test-set" not in html
    assert (
        f'<code>{completed.test_set_path}</code> <span class="hint">(no dataset of its owner has this path now)' in html
    )


def test_other_users_get_404_and_anonymous_users_the_login_page(completed, client, bob):
    assert client.get(f"/evaluations/{completed.id}/").status_code == 302
    assert "/accounts/login" in client.get("/evaluations/")["Location"]
    client.force_login(bob)
    assert client.get(f"/evaluations/{completed.id}/").status_code == 404
    assert client.post(f"/evaluations/{completed.id}/cancel/").status_code == 404


def test_the_create_form_offers_ollamas_models(alice, alice_browser, make_model, make_test_set, trained_ollama):
    model = make_model(alice)
    dataset = make_test_set(alice)
    html = alice_browser.get(f"/evaluations/new/?model={model.id}").content.decode()
    assert '<option value="llama3.2:3b">' in html
    assert dataset.path in html
    assert (
        f'<option value="{model.id}" data-ollama-name="contracts-ft" data-base="llama3.2:3b" '
        'data-local-ready="" selected>' in html
    )
    # An uploaded model with no adapter, on a base the studio does not have: the default endpoint stays chosen.
    assert '<option value="ollama" selected>' in html


def test_the_create_form_falls_back_to_free_text_when_ollama_is_unreachable(
    alice, alice_browser, make_model, make_test_set, settings
):
    from tests.support.processes import free_port

    make_model(alice)
    make_test_set(alice)
    settings.OLLAMA_URL = f"http://127.0.0.1:{free_port()}"
    html = alice_browser.get("/evaluations/new/").content.decode()
    assert "could not list ollama's models" in html
    assert 'name="base_model_name"' in html


def test_posting_the_form_starts_an_evaluation(
    alice, alice_browser, make_model, make_test_set, trained_ollama, django_capture_on_commit_callbacks
):
    model = make_model(alice)
    dataset = make_test_set(alice)
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_browser.post(
            "/evaluations/new/",
            {"model": model.id, "test_set_path": dataset.path, "base_model_name": "llama3.2:3b", "concurrency": 2},
        )
    evaluation = Evaluation.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/evaluations/{evaluation.id}/"
    assert evaluation.status == "completed" and evaluation.fine_tuned_name == "contracts-ft"


def test_the_form_shows_the_services_reasons(alice, alice_browser, make_model, make_test_set, ollama_server):
    model = make_model(alice)
    dataset = make_test_set(alice)
    response = alice_browser.post(
        "/evaluations/new/",
        {"model": model.id, "test_set_path": dataset.path, "base_model_name": "contracts-ft", "labels": "positive"},
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert "every candidate" in html and "give at least two labels" in html
    assert not Evaluation.objects.exists()


def test_cancelling_from_the_page(alice, alice_api, alice_browser, make_model, make_test_set, ollama_server):
    evaluation_id = evaluate(alice_api, make_model(alice), make_test_set(alice)).json()["evaluation_id"]
    response = alice_browser.post(f"/evaluations/{evaluation_id}/cancel/")
    assert response.status_code == 302
    assert Evaluation.objects.get(id=evaluation_id).status == "cancelled"


def test_the_detail_page_headlines_the_best_candidate_and_shows_every_verdict(best_listed_last, alice_browser):
    html = alice_browser.get(f"/evaluations/{best_listed_last.id}/").content.decode()
    headline = re.search(r"<h2>Verdict</h2>(.*?)<h2>", html, re.DOTALL).group(1)
    assert "significant improvement" in headline and "not significant" not in headline
    assert "<code>probe-tuned</code>" in headline and "best of 2 fine-tuned candidates by accuracy" in headline
    cards = re.search(r"<h2>Metrics</h2>(.*?)<h2>", html, re.DOTALL).group(1)
    assert "100.0 %" in cards and "+66.7 pts" in cards
    verdicts = re.findall(r'<tr data-candidate="([^"]+)">.*?<td data-verdict>([^<]*)</td>', html, re.DOTALL)
    assert verdicts == [  # in the order given, the base first
        ("llama3.2:3b", "base"),
        ("probe-base:latest", "not significant"),
        ("probe-tuned", "significant improvement"),
    ]
    assert 'data-outcome="fixed"' in html


def test_the_list_and_the_dashboard_summarise_the_best_candidate(best_listed_last, alice_browser):
    row = re.search(
        rf'<tr data-evaluation-id="{best_listed_last.id}">(.*?)</tr>',
        alice_browser.get("/evaluations/").content.decode(),
        re.DOTALL,
    ).group(1)
    assert "+66.7 pts" in row and "significant improvement" in row
    dashboard = alice_browser.get("/").content.decode()
    assert "Significant improvement · accuracy" in dashboard and "Not significant" not in dashboard


def test_a_failed_evaluations_page_offers_retry_which_asks_only_what_is_missing(
    alice, alice_api, alice_browser, make_model, make_test_set, ollama_server, django_capture_on_commit_callbacks
):
    ollama_server.add_model("llama3.2:3b", answer="neutral")  # the fine-tuned model is missing: the run fails
    with django_capture_on_commit_callbacks(execute=True):
        evaluation_id = evaluate(alice_api, make_model(alice), make_test_set(alice)).json()["evaluation_id"]
    assert Evaluation.objects.get(id=evaluation_id).status == "failed"
    retry_form = f'action="/evaluations/{evaluation_id}/retry/"'
    assert retry_form in alice_browser.get(f"/evaluations/{evaluation_id}/").content.decode()
    asked_before = len(ollama_server.chat_requests(model="llama3.2:3b"))
    stored_base_answers = Prediction.objects.filter(evaluation_id=evaluation_id, candidate="llama3.2:3b").count()

    ollama_server.add_model("contracts-ft", answer="positive")
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_browser.post(f"/evaluations/{evaluation_id}/retry/", follow=True)
    assert response.redirect_chain == [(f"/evaluations/{evaluation_id}/", 302)]
    evaluation = Evaluation.objects.get(id=evaluation_id)
    assert evaluation.status == "completed", evaluation.error_message
    # The base's answers from the failed run were kept: a retry asks only what is missing.
    assert len(ollama_server.chat_requests(model="llama3.2:3b")) - asked_before == 12 - stored_base_answers
    html = response.content.decode()
    assert "queued again" in html and retry_form not in html


def test_retrying_an_evaluation_that_did_not_fail_says_why_and_changes_nothing(completed, alice_browser):
    assert (
        f'action="/evaluations/{completed.id}/retry/"'
        not in alice_browser.get(f"/evaluations/{completed.id}/").content.decode()
    )
    response = alice_browser.post(f"/evaluations/{completed.id}/retry/", follow=True)
    assert "Only a failed evaluation can be retried; this one is completed." in response.content.decode()
    assert Evaluation.objects.get(id=completed.id).status == "completed"
    assert alice_browser.get(f"/evaluations/{completed.id}/retry/").status_code == 405
