"""Every endpoint, for every kind of caller: Alice owns, Bob must not see, Olivia is staff, anonymous gets 401."""

import pytest

from finetune_studio.objects import bucket
from models_app.models import RegisteredModel
from tests.factories import make_model

API = "/api/v1/models"
FILES = {"lora_adapters/adapter_model.safetensors": b"weights", "notes.md": b"# hi"}


def call(client, action, model_id):
    if action == "detail":
        return client.get(f"{API}/{model_id}")
    if action == "download":
        return client.get(f"{API}/{model_id}/download")
    if action == "patch":
        return client.patch(f"{API}/{model_id}", {"name": "renamed"})
    if action == "put":
        return client.put(
            f"{API}/{model_id}", {"name": "x", "description": "", "base_model": "b", "type": "lora", "status": "ready"}
        )
    if action == "upload":
        return client.post(f"{API}/{model_id}/files", {"path": "extra.txt", "file": _file()}, format="multipart")
    if action == "delete":
        return client.delete(f"{API}/{model_id}")
    raise AssertionError(action)


def _file():
    import io

    handle = io.BytesIO(b"extra")
    handle.name = "extra.txt"
    return handle


ACTIONS = ["detail", "download", "patch", "put", "upload", "delete"]


@pytest.mark.parametrize("action", ACTIONS)
def test_bob_gets_404_and_changes_nothing(bob_api, alice, action):
    model = make_model(alice, files=FILES)
    response = call(bob_api, action, model.id)
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}
    model.refresh_from_db()
    assert model.name == "my model" and len(model.files) == 2
    assert len(list(bucket("models").list(model.storage_path))) == 2


@pytest.mark.parametrize("action", ACTIONS)
def test_anonymous_gets_401(anon_api, alice, action):
    model = make_model(alice, files=FILES)
    response = call(anon_api, action, model.id)
    assert response.status_code == 401
    assert RegisteredModel.objects.filter(id=model.id).exists()


@pytest.mark.parametrize("action", ACTIONS)
def test_staff_may_act_on_anyones_model(olivia_api, alice, action):
    model = make_model(alice, files=FILES)
    response = call(olivia_api, action, model.id)
    assert response.status_code in (200, 201, 204), response.content


def test_bob_does_not_see_alices_models_in_the_list_and_anonymous_gets_401(bob_api, anon_api, alice, bob):
    make_model(alice)
    make_model(bob, name="bob's")
    assert [m["name"] for m in bob_api.get(API).json()["results"]] == ["bob's"]
    assert anon_api.get(API).status_code == 401


def test_links_are_only_in_the_owners_detail(alice_api, bob_api, alice):
    model = make_model(alice, files=FILES)
    links = alice_api.get(f"{API}/{model.id}").json()["download_links"]
    assert set(links["files"]) == set(FILES)
    assert "download_links" not in bob_api.get(f"{API}/{model.id}").json()


def test_a_non_numeric_id_is_a_404_not_a_500(alice_api):
    assert alice_api.get(f"{API}/abc").status_code == 404
    assert alice_api.get(f"{API}/abc/download").status_code == 404
