"""Aliases: moving one is a recorded event; resolving one gives the version with its links; a stale move is a 409."""

import threading

import pytest
from django.db import connection

from models_app import registry, services
from models_app.models import AliasEvent, ModelAlias, RegisteredName
from models_app.signals import alias_moved
from tests.factories import ARTIFACTS

BASE = "/api/v1/registry/contracts"


@pytest.fixture
def contracts(alice):
    """alice's ``contracts`` with three versions, v2 with files."""
    for label in ("a", "b", "c"):
        model = services.model_create(owner=alice, name=f"run {label}", base_model="tiny", registered_name="contracts")
        if label == "b":
            from finetune_studio.objects import bucket

            for path, data in ARTIFACTS.items():
                upload = bucket("models").upload(model.file_key(path), _file(data))
                services.model_file_add(model_id=model.id, path=path, upload=upload)
    return RegisteredName.objects.get(owner=alice, name="contracts")


def _file(data: bytes):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("f", data)


def test_alice_points_champion_at_v2_and_an_integration_resolves_it_with_links(alice_api, contracts):
    moved = alice_api.put(f"{BASE}/aliases/champion", {"version": 2}, format="json")
    assert moved.status_code == 200, moved.content
    assert moved.json()["version"] == 2 and moved.json()["moved_by"] == "alice"

    resolved = alice_api.get(f"{BASE}/aliases/champion")
    assert resolved.status_code == 200
    body = resolved.json()
    assert (body["name"], body["alias"], body["version"]) == ("contracts", "champion", 2)
    assert body["model"]["name"] == "run b" and body["model"]["version"] == 2
    assert body["download_links"]["lora_adapters"]
    assert set(body["download_links"]["files"]) == set(ARTIFACTS)
    assert body["zip_url"].endswith(f"/api/v1/models/{body['model']['id']}/download")


def test_every_move_is_recorded_with_who_and_from_which_version(alice_api, contracts):
    alice_api.put(f"{BASE}/aliases/champion", {"version": 1}, format="json")
    alice_api.put(f"{BASE}/aliases/champion", {"version": 3, "from_version": 1}, format="json")
    alice_api.put(f"{BASE}/aliases/candidate", {"version": 2}, format="json")
    history = alice_api.get(BASE).json()["history"]
    assert [(row["alias"], row["from_version"], row["to_version"], row["moved_by"]) for row in history] == [
        ("candidate", None, 2, "alice"),
        ("champion", 1, 3, "alice"),
        ("champion", None, 1, "alice"),
    ]
    aliases = {row["alias"]: row["version"] for row in alice_api.get(BASE).json()["aliases"]}
    assert aliases == {"champion": 3, "candidate": 2}


def test_a_move_naming_a_stale_from_version_is_a_409_and_changes_nothing(alice_api, contracts):
    alice_api.put(f"{BASE}/aliases/champion", {"version": 2}, format="json")
    response = alice_api.put(f"{BASE}/aliases/champion", {"version": 3, "from_version": 1}, format="json")
    assert response.status_code == 409
    assert response.json()["current_version"] == 2
    assert alice_api.get(f"{BASE}/aliases/champion").json()["version"] == 2
    assert AliasEvent.objects.count() == 1


def test_moving_to_where_it_already_points_records_nothing(alice_api, contracts):
    alice_api.put(f"{BASE}/aliases/champion", {"version": 2}, format="json")
    again = alice_api.put(f"{BASE}/aliases/champion", {"version": 2, "from_version": 2}, format="json")
    assert again.status_code == 200
    assert AliasEvent.objects.count() == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [({"version": 9}, "version"), ({"version": "two"}, "version"), ({"version": 1, "colour": "red"}, "colour")],
)
def test_bad_moves_are_400s_naming_the_field(alice_api, contracts, body, field):
    response = alice_api.put(f"{BASE}/aliases/champion", body, format="json")
    assert response.status_code == 400
    assert field in response.json()["errors"]
    assert not ModelAlias.objects.exclude(model=None).exists()


def test_a_badly_spelled_alias_is_refused(alice_api, contracts):
    assert alice_api.put(f"{BASE}/aliases/Champion!", {"version": 1}, format="json").status_code == 400
    assert alice_api.get(f"{BASE}/aliases/Champion!").status_code == 404


def test_an_unknown_alias_or_name_resolves_to_404(alice_api, contracts):
    assert alice_api.get(f"{BASE}/aliases/champion").status_code == 404
    assert alice_api.get("/api/v1/registry/nope/aliases/champion").status_code == 404


def test_an_alias_on_a_deleted_version_says_so(alice_api, contracts):
    alice_api.put(f"{BASE}/aliases/champion", {"version": 3}, format="json")
    services.model_delete(model_id=contracts.versions.get(version=3).id)
    response = alice_api.get(f"{BASE}/aliases/champion")
    assert response.status_code == 404 and "deleted" in response.json()["detail"]


def test_bob_can_neither_resolve_nor_move_alices_alias(alice_api, bob_api, contracts):
    alice_api.put(f"{BASE}/aliases/champion", {"version": 1}, format="json")
    assert bob_api.get(f"{BASE}/aliases/champion").status_code == 404
    assert bob_api.put(f"{BASE}/aliases/champion", {"version": 2}, format="json").status_code == 404
    assert alice_api.get(f"{BASE}/aliases/champion").json()["version"] == 1


def test_a_move_publishes_a_live_event_and_a_signal_after_commit(
    alice, contracts, monkeypatch, django_capture_on_commit_callbacks
):
    from models_app import registry as registry_module

    published, received = [], []
    monkeypatch.setattr(registry_module, "publish_event_on_commit", lambda *args: published.append(args))

    def receiver(sender, **payload):
        received.append(payload)

    alias_moved.connect(receiver)
    try:
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            registry.alias_move(registered_name=contracts, alias="champion", version=2, moved_by=alice)
            assert received == []  # nothing before the commit
        for callback in callbacks:
            callback()
    finally:
        alias_moved.disconnect(receiver)
    channel, kind, data = published[0]
    assert (channel, kind) == (f"user-{alice.id}", "registry")
    assert data["action"] == "alias_moved" and data["to_version"] == 2 and data["from_version"] is None
    assert received[0]["name"] == "contracts" and received[0]["to_version"] == 2


def test_the_name_page_shows_aliases_and_history_and_moves_an_alias(alice, client, contracts):
    client.force_login(alice)
    response = client.post("/registry/contracts/aliases/", {"alias": "champion", "version": "2"})
    assert response.status_code == 302
    page = client.get("/registry/contracts/")
    assert b'data-alias="champion"' in page.content and b"v2" in page.content
    assert page.content.count(b"data-alias-event") == 1
    stale = client.post("/registry/contracts/aliases/", {"alias": "champion", "version": "3", "from_version": "1"})
    assert stale.status_code == 302
    assert ModelAlias.objects.get(alias="champion").model.version == 2


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_of_two_concurrent_moves_from_the_same_version_exactly_one_wins(alice):
    for label in ("a", "b", "c"):
        services.model_create(owner=alice, name=label, base_model="tiny", registered_name="contracts")
    contracts = RegisteredName.objects.get(owner=alice, name="contracts")
    registry.alias_move(registered_name=contracts, alias="champion", version=1, moved_by=alice)
    barrier = threading.Barrier(2)
    outcomes = {}

    def move(version):
        try:
            barrier.wait()
            registry.alias_move(
                registered_name=contracts, alias="champion", version=version, from_version=1, moved_by=alice
            )
            outcomes[version] = "moved"
        except registry.AliasConflict:
            outcomes[version] = "conflict"
        finally:
            connection.close()

    threads = [threading.Thread(target=move, args=(version,)) for version in (2, 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert sorted(outcomes.values()) == ["conflict", "moved"]
    winner = next(version for version, outcome in outcomes.items() if outcome == "moved")
    assert ModelAlias.objects.get(alias="champion").model.version == winner
    assert list(AliasEvent.objects.filter(alias="champion").values_list("from_version", "to_version")) == [
        (1, winner),
        (None, 1),
    ]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_first_moves_of_a_new_alias_leave_one_alias_row(alice):
    for label in ("a", "b"):
        services.model_create(owner=alice, name=label, base_model="tiny", registered_name="contracts")
    contracts = RegisteredName.objects.get(owner=alice, name="contracts")
    barrier = threading.Barrier(2)
    errors = []

    def move(version):
        try:
            barrier.wait()
            registry.alias_move(registered_name=contracts, alias="candidate", version=version, moved_by=alice)
        except Exception as exc:  # collected: the assertion shows them
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=move, args=(version,)) for version in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert errors == []
    assert ModelAlias.objects.filter(alias="candidate").count() == 1
    assert AliasEvent.objects.filter(alias="candidate").count() == 2


def test_resolving_an_alias_costs_the_same_queries_however_many_versions_the_name_has(alice, alice_api, contracts):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    alice_api.put(f"{BASE}/aliases/champion", {"version": 2}, format="json")
    with CaptureQueriesContext(connection) as few:
        assert alice_api.get(f"{BASE}/aliases/champion").status_code == 200
    for number in range(20):
        services.model_create(owner=alice, name=f"later {number}", base_model="tiny-llama", registered_name="contracts")
    with CaptureQueriesContext(connection) as many:
        assert alice_api.get(f"{BASE}/aliases/champion").status_code == 200
    assert len(many) == len(few), [query["sql"][:120] for query in many.captured_queries]
    # The token, the alias with its name and version in one join, the lineage's evaluations.
    assert len(few) == 3, [query["sql"][:120] for query in few.captured_queries]


def test_the_gate_form_offers_the_owners_test_sets_the_metrics_by_task_and_the_endpoints(
    alice, bob, client, contracts, make_dataset, settings
):
    settings.OLLAMA_URL = "http://127.0.0.1:9"  # nothing listens
    labelled = make_dataset(alice, rows=[{"text": "pay in 30 days", "label": "payment"}], name="clauses-test")
    instructions = make_dataset(alice, name="instructions-test")  # Alpaca records: a generation set
    make_dataset(bob, rows=[{"text": "pay in 30 days", "label": "payment"}], name="bobs-test")
    client.force_login(alice)
    page = client.get("/registry/contracts/").content.decode()
    gate_form = page[page.index('id="id_test_set_path"') : page.index("Save gate")]
    assert f'<option value="{labelled.path}">clauses-test (1 records, classification)</option>' in gate_form
    assert f'<option value="{instructions.path}">instructions-test ({instructions.records} records, generation)' in (
        gate_form
    )
    assert "bobs-test" not in gate_form
    assert '<optgroup label="generation test sets"><option>exact_match</option><option>token_f1</option>' in gate_form
    assert '<option value="local" selected>local</option>' in gate_form  # Ollama does not answer here
    assert '<option value="ollama">ollama (unavailable)</option>' in gate_form
    saved = client.post(
        "/registry/contracts/gate/", {"test_set_path": labelled.path, "endpoint": "local", "threshold": "0.01"}
    )
    assert saved.status_code == 302
    page = client.get("/registry/contracts/").content.decode()
    assert f'<option value="{labelled.path}" selected>' in page
    assert '<option value="local" selected>local</option>' in page
