"""Who may do what, for every owned resource (the rows of tests/security/matrix.py)."""

import json

import pytest
from rest_framework.authtoken.models import Token

from jobs.models import Job

from .matrix import API_COLLECTION_WRITES, API_LISTS, API_OBJECT_ENDPOINTS, PAGE_LISTS, PAGE_OBJECT_ENDPOINTS
from .requests import send
from .world import owner_state

pytestmark = pytest.mark.django_db

OBJECT_IDS = [row.name for row in API_OBJECT_ENDPOINTS]


@pytest.mark.parametrize("row", API_OBJECT_ENDPOINTS + API_COLLECTION_WRITES, ids=lambda r: r.name)
def test_it_answers_401_to_anonymous_api_requests(world, anon_api, row):
    before = owner_state(world)
    response = send(anon_api, row, world.ids())
    assert response.status_code == 401, response.content[:300]
    # CSV downloads carry their error as JSON text (the renderer the client asked for).
    assert "detail" in json.loads(response.content)
    assert owner_state(world) == before


def test_it_gives_bob_404_on_every_action_on_alice_objects_and_changes_nothing(world, bob_api):
    before = owner_state(world)
    answers = {row.name: send(bob_api, row, world.ids()).status_code for row in API_OBJECT_ENDPOINTS}
    assert answers == dict.fromkeys(OBJECT_IDS, 404)
    assert owner_state(world) == before


def test_bob_cannot_name_the_storage_folders_of_alice_objects_as_a_base_model(local_storage, world, bob, bob_api):
    """Standalone storage: alice's model, dataset and job folders are readable files on the server."""
    bobs_dataset = build_bob_world(bob).dataset
    alices_folders = [
        local_storage / "models" / world.model.storage_path,
        local_storage / "models" / world.finished_job.storage_prefix,
        local_storage / "datasets" / "users" / str(world.owner.id),
        local_storage / "logs" / "users" / str(world.owner.id),
    ]
    jobs_before = Job.objects.count()
    answers = {}
    for folder in alices_folders:
        for trainer in ("lora-sft", "example"):
            response = bob_api.post(
                "/api/v1/jobs",
                {"name": "x", "base_model": str(folder), "dataset": bobs_dataset.id, "trainer": trainer},
                format="json",
            )
            answers[(folder.name, trainer)] = (response.status_code, str(response.json().get("errors")))
    assert {key: code for key, (code, _) in answers.items()} == dict.fromkeys(answers, 400)
    assert all("inside the studio's own storage" in errors for _, errors in answers.values())
    assert Job.objects.count() == jobs_before


@pytest.mark.parametrize(
    "row", [row for row in API_OBJECT_ENDPOINTS if not row.is_write and "SSE" not in row.name], ids=lambda r: r.name
)
def test_it_lets_the_owner_and_staff_read(world, alice_api, olivia_api, row):
    assert send(alice_api, row, world.ids()).status_code == 200
    assert send(olivia_api, row, world.ids()).status_code == 200


@pytest.mark.parametrize(("name", "path", "key"), API_LISTS, ids=[entry[0] for entry in API_LISTS])
def test_lists_never_contain_another_users_rows_but_staff_see_all(world, bob, bob_api, olivia_api, name, path, key):
    bobs = build_bob_world(bob)
    bob_ids = {row["id"] for row in bob_api.get(path).json()["results"]}
    assert world.ids()[key] not in bob_ids
    assert bobs.ids()[key] in bob_ids
    staff_ids = {row["id"] for row in olivia_api.get(path, {"page_size": 200}).json()["results"]}
    assert {world.ids()[key], bobs.ids()[key]} <= staff_ids


def build_bob_world(bob):
    from .world import build_world

    return build_world(bob, tag="bob")


def test_staff_may_act_on_other_users_objects(world, olivia_api):
    response = olivia_api.post(f"/api/v1/jobs/{world.running_job.id}/cancel")
    assert response.status_code == 200
    assert Job.objects.get(id=world.running_job.id).status in ("cancelled", "cancelling")


def test_a_revoked_token_stops_working_at_once(world, alice, alice_api):
    assert alice_api.get(f"/api/v1/jobs/{world.running_job.id}").status_code == 200
    Token.objects.filter(user=alice).delete()
    response = alice_api.get(f"/api/v1/jobs/{world.running_job.id}")
    assert response.status_code == 401
    assert alice_api.get(f"/api/v1/jobs/{world.running_job.id}/logs?format=json").status_code == 401


def test_revoking_through_the_token_page_stops_the_token(world, alice, alice_api, alice_browser):
    assert alice_api.get("/api/v1/jobs/").status_code == 200
    assert alice_browser.post("/accounts/token/revoke/").status_code in (200, 302)
    assert alice_api.get("/api/v1/jobs/").status_code == 401


# --- pages ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("row", PAGE_OBJECT_ENDPOINTS, ids=lambda r: r.name)
def test_pages_send_anonymous_visitors_to_login(world, client, row):
    before = owner_state(world)
    url = row.url(world.ids())
    response = client.post(url, row.data or {}) if row.is_write else client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    assert owner_state(world) == before


@pytest.mark.parametrize("path", PAGE_LISTS)
def test_list_pages_send_anonymous_visitors_to_login(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


@pytest.mark.parametrize("row", PAGE_OBJECT_ENDPOINTS, ids=lambda r: r.name)
def test_pages_give_bob_404_on_alice_objects(world, client, bob, row):
    client.force_login(bob)
    before = owner_state(world)
    url = row.url(world.ids())
    response = client.post(url, row.data or {}) if row.is_write else client.get(url)
    assert response.status_code == 404
    assert owner_state(world) == before


@pytest.mark.parametrize("path", PAGE_LISTS)
def test_list_pages_never_show_another_users_objects(world, client, bob, path):
    client.force_login(bob)
    response = client.get(path)
    assert response.status_code == 200
    assert b"alice-secret" not in response.content
    assert b"alice private" not in response.content


@pytest.mark.parametrize("row", [row for row in PAGE_OBJECT_ENDPOINTS if not row.is_write], ids=lambda r: r.name)
def test_staff_see_other_users_pages(world, client, olivia, row):
    client.force_login(olivia)
    response = client.get(row.url(world.ids()))
    assert response.status_code in (200, 302)  # the ZIP page may redirect to the API download
