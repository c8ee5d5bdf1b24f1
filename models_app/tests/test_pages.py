import json
import re

import pytest

from models_app.models import RegisteredModel
from tests.factories import make_model

FILES = {"lora_adapters/adapter_model.safetensors": b"w" * 3000, "gguf/m.gguf": b"GGUF" * 10}


def test_the_list_shows_alices_models_with_sizes_and_status_badges(alice_browser, alice, bob):
    make_model(alice, files=FILES, name="sentiment v1")
    make_model(bob, name="bob's secret")
    page = alice_browser.get("/models/").content.decode()
    assert "sentiment v1" in page and "bob&#x27;s secret" not in page and "bob's secret" not in page
    assert "3.0\xa0KB" in page  # 3,040 bytes, human-readable
    assert 'class="badge ready"' in page


def test_the_list_filters_like_the_api(alice_browser, alice):
    make_model(alice, name="llama one", base_model="tiny-llama")
    make_model(alice, name="gemma one", base_model="gemma-2b", status="failed")
    page = alice_browser.get("/models/?base_model=gemma-2b").content.decode()
    assert "gemma one" in page and "llama one" not in page
    page = alice_browser.get("/models/?search=LLAMA").content.decode()
    assert "llama one" in page and "gemma one" not in page


def test_bad_filters_on_the_page_are_explained_not_a_500(alice_browser, alice):
    make_model(alice)
    response = alice_browser.get("/models/?status=exploded&date_from=someday")
    assert response.status_code == 400
    page = response.content.decode()
    assert 'class="field-error"' in page and "date_from" in page


def test_pages_redirect_anonymous_visitors_to_login(client, alice):
    model = make_model(alice)
    for url in ["/models/", f"/models/{model.id}/", f"/models/{model.id}/delete/"]:
        response = client.get(url)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_the_detail_page_shows_files_links_chart_and_actions(alice_browser, alice):
    history = [{"step": s, "loss": 1.0 / s} for s in range(1, 6)]
    model = make_model(alice, files=FILES, training_metrics={"final": {"loss": 0.2}, "loss_history": history})
    page = alice_browser.get(f"/models/{model.id}/").content.decode()
    assert "lora_adapters/adapter_model.safetensors" in page
    assert "X-Amz-Expires" in page  # per-file presigned links
    data = json.loads(re.search(r'<script id="loss-history" type="application/json">(.*?)</script>', page).group(1))
    assert [point["loss"] for point in data] == [point["loss"] for point in history]
    assert "vendor/chart-4.6.1.umd.min.js" in page and "models_app/model_detail.js" in page
    assert f"/models/{model.id}/download/" in page
    assert f"/evaluations/new/?model={model.id}" in page
    assert 'name="csrfmiddlewaretoken"' in page and "data-confirm" in page


def test_the_detail_page_lists_the_models_evaluations(alice_browser, alice):
    from evaluations.models import Evaluation

    model = make_model(alice)
    evaluation = Evaluation.objects.create(owner=alice, model=model, test_set_path="t.json", base_model_name="b")
    page = alice_browser.get(f"/models/{model.id}/").content.decode()
    assert f"/evaluations/{evaluation.id}/" in page


@pytest.mark.parametrize("user", ["bob"])
def test_bob_gets_404_on_alices_detail_page(client, alice, bob, user):
    model = make_model(alice)
    client.force_login(bob)
    assert client.get(f"/models/{model.id}/").status_code == 404


def test_staff_sees_anyones_detail_page(client, alice, olivia):
    model = make_model(alice)
    client.force_login(olivia)
    assert client.get(f"/models/{model.id}/").status_code == 200


def test_delete_asks_for_confirmation_then_deletes_on_post(alice_browser, alice):
    model = make_model(alice, files=FILES)
    confirm = alice_browser.get(f"/models/{model.id}/delete/")
    assert confirm.status_code == 200 and b"cannot be undone" in confirm.content
    assert RegisteredModel.objects.filter(id=model.id).exists()
    response = alice_browser.post(f"/models/{model.id}/delete/", follow=True)
    assert response.redirect_chain[-1][0] == "/models/"
    assert not RegisteredModel.objects.filter(id=model.id).exists()
    assert "Deleted" in response.content.decode()


def test_delete_refuses_a_post_without_csrf_token(alice):
    from django.test import Client

    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)
    model = make_model(alice)
    assert browser.post(f"/models/{model.id}/delete/").status_code == 403
    assert RegisteredModel.objects.filter(id=model.id).exists()


def test_delete_confirmation_warns_that_the_evaluations_go_too(alice_browser, alice):
    from evaluations.models import Evaluation

    model = make_model(alice, files=FILES)
    Evaluation.objects.create(owner=alice, model=model, test_set_path="datasets/x.jsonl", base_model_name="base")
    confirm = alice_browser.get(f"/models/{model.id}/delete/").content.decode()
    assert "and its 1 evaluation with every stored prediction" in confirm
