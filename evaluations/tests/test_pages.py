import pytest

from evaluations.models import Evaluation

from .test_api import evaluate


@pytest.fixture
def completed(alice, alice_api, make_model, make_dataset, trained_ollama, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = evaluate(alice_api, make_model(alice), make_dataset(alice))
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


def test_other_users_get_404_and_anonymous_users_the_login_page(completed, client, bob):
    assert client.get(f"/evaluations/{completed.id}/").status_code == 302
    assert "/accounts/login" in client.get("/evaluations/")["Location"]
    client.force_login(bob)
    assert client.get(f"/evaluations/{completed.id}/").status_code == 404
    assert client.post(f"/evaluations/{completed.id}/cancel/").status_code == 404


def test_the_create_form_offers_ollamas_models(alice, alice_browser, make_model, make_dataset, trained_ollama):
    model = make_model(alice)
    dataset = make_dataset(alice)
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
    alice, alice_browser, make_model, make_dataset, settings
):
    from tests.support.processes import free_port

    make_model(alice)
    make_dataset(alice)
    settings.OLLAMA_URL = f"http://127.0.0.1:{free_port()}"
    html = alice_browser.get("/evaluations/new/").content.decode()
    assert "could not list ollama's models" in html
    assert 'name="base_model_name"' in html


def test_posting_the_form_starts_an_evaluation(
    alice, alice_browser, make_model, make_dataset, trained_ollama, django_capture_on_commit_callbacks
):
    model = make_model(alice)
    dataset = make_dataset(alice)
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_browser.post(
            "/evaluations/new/",
            {"model": model.id, "test_set_path": dataset.path, "base_model_name": "llama3.2:3b", "concurrency": 2},
        )
    evaluation = Evaluation.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/evaluations/{evaluation.id}/"
    assert evaluation.status == "completed" and evaluation.fine_tuned_name == "contracts-ft"


def test_the_form_shows_the_services_reasons(alice, alice_browser, make_model, make_dataset, ollama_server):
    model = make_model(alice)
    dataset = make_dataset(alice)
    response = alice_browser.post(
        "/evaluations/new/",
        {"model": model.id, "test_set_path": dataset.path, "base_model_name": "contracts-ft", "labels": "positive"},
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert "every candidate" in html and "give at least two labels" in html
    assert not Evaluation.objects.exists()


def test_cancelling_from_the_page(alice, alice_api, alice_browser, make_model, make_dataset, ollama_server):
    evaluation_id = evaluate(alice_api, make_model(alice), make_dataset(alice)).json()["evaluation_id"]
    response = alice_browser.post(f"/evaluations/{evaluation_id}/cancel/")
    assert response.status_code == 302
    assert Evaluation.objects.get(id=evaluation_id).status == "cancelled"
