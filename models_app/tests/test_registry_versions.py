"""Registered names and versions: every model is version N of a name its owner chose (or that was derived)."""

import threading

import pytest
from django.db import connection

from models_app import services
from models_app.models import RegisteredModel, RegisteredName
from tests.factories import make_trained_job as make_job

API = "/api/v1/models"


def test_an_upload_with_a_registered_name_becomes_its_next_version(alice_api, alice):
    first = alice_api.post(API, {"name": "run a", "base_model": "tiny", "registered_name": "contracts"})
    second = alice_api.post(API, {"name": "run b", "base_model": "tiny", "registered_name": "contracts"})
    assert first.status_code == 201, first.content
    assert (first.json()["model"]["registered_name"], first.json()["model"]["version"]) == ("contracts", 1)
    assert (second.json()["model"]["registered_name"], second.json()["model"]["version"]) == ("contracts", 2)
    listed = alice_api.get(API).json()["results"]
    assert {(row["registered_name"], row["version"]) for row in listed} == {("contracts", 1), ("contracts", 2)}


def test_without_a_registered_name_one_is_derived_from_the_model_name(alice_api):
    body = alice_api.post(API, {"name": "Sentiment Classifier v2", "base_model": "tiny"}).json()
    assert (body["model"]["registered_name"], body["model"]["version"]) == ("sentiment-classifier-v2", 1)


@pytest.mark.parametrize("bad", ["-starts-with-dash", "has space", "slash/inside", "x" * 101])
def test_a_badly_spelled_registered_name_is_a_400_naming_the_field(alice_api, bad):
    response = alice_api.post(API, {"name": "a", "base_model": "tiny", "registered_name": bad})
    assert response.status_code == 400
    assert "registered_name" in response.json()["errors"]
    assert not RegisteredModel.objects.exists() and not RegisteredName.objects.exists()


def test_names_are_per_owner_so_bob_starts_his_own_contracts_at_version_1(alice, bob):
    services.model_create(owner=alice, name="a", base_model="tiny", registered_name="contracts")
    bobs = services.model_create(owner=bob, name="b", base_model="tiny", registered_name="contracts")
    assert bobs.version == 1
    assert RegisteredName.objects.filter(name="contracts").count() == 2


def test_a_deleted_versions_number_is_never_handed_out_again(alice):
    services.model_create(owner=alice, name="a", base_model="tiny", registered_name="contracts")
    second = services.model_create(owner=alice, name="b", base_model="tiny", registered_name="contracts")
    services.model_delete(model_id=second.id)
    third = services.model_create(owner=alice, name="c", base_model="tiny", registered_name="contracts")
    assert third.version == 3


def test_a_job_created_with_a_registered_name_gives_its_model_that_name(alice, alice_api):
    response = alice_api.post(
        "/api/v1/jobs/",
        {"name": "nightly", "base_model": "tiny", "trainer": "external", "registered_name": "contracts"},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["registered_name"] == "contracts"
    from jobs.models import Job

    job = Job.objects.get(id=response.json()["id"])
    services.model_create(owner=alice, name="earlier upload", base_model="tiny", registered_name="contracts")
    Job.objects.filter(id=job.id).update(status="succeeded", finished_at=job.created_at)
    model = services.model_create_from_job(job_id=job.id)
    assert (model.registered_name.name, model.version) == ("contracts", 2)


def test_a_job_with_a_badly_spelled_registered_name_is_refused(alice_api):
    response = alice_api.post(
        "/api/v1/jobs/",
        {"name": "nightly", "base_model": "tiny", "trainer": "external", "registered_name": "no spaces"},
        format="json",
    )
    assert response.status_code == 400
    assert "registered_name" in response.json()["errors"]


def test_a_jobs_model_without_a_chosen_name_takes_one_derived_from_the_job_name(alice):
    job = make_job(alice, name="Contract Clauses run")
    model = services.model_create_from_job(job_id=job.id)
    assert (model.registered_name.name, model.version) == ("contract-clauses-run", 1)


def test_the_registry_lists_a_names_versions_newest_first(alice_api, alice):
    for label in ("a", "b", "c"):
        services.model_create(owner=alice, name=label, base_model="tiny", registered_name="contracts")
    body = alice_api.get("/api/v1/registry/contracts").json()
    assert body["name"] == "contracts" and body["last_version"] == 3
    assert [(row["version"], row["name"]) for row in body["versions"]] == [(3, "c"), (2, "b"), (1, "a")]
    names = alice_api.get("/api/v1/registry/").json()["results"]
    assert [(row["name"], row["version_count"]) for row in names] == [("contracts", 3)]


def test_bob_cannot_see_alices_name_and_has_his_own_list(alice, bob_api):
    services.model_create(owner=alice, name="a", base_model="tiny", registered_name="contracts")
    assert bob_api.get("/api/v1/registry/contracts").status_code == 404
    assert bob_api.get("/api/v1/registry/").json()["results"] == []


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_versions_are_numbered_one_to_n_under_concurrent_creation(alice):
    workers = 8
    barrier = threading.Barrier(workers)
    errors = []

    def create(index):
        try:
            barrier.wait()
            services.model_create(owner=alice, name=f"run {index}", base_model="tiny", registered_name="contracts")
        except Exception as exc:  # collected: the assertion below shows them
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=create, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert errors == []
    versions = sorted(
        RegisteredModel.objects.filter(registered_name__name="contracts").values_list("version", flat=True)
    )
    assert versions == list(range(1, workers + 1))
    assert RegisteredName.objects.get(name="contracts").last_version == workers


def test_the_registry_pages_show_alices_names_and_versions_and_hide_them_from_bob(alice, bob, client):
    services.model_create(owner=alice, name="first run", base_model="tiny", registered_name="contracts")
    client.force_login(alice)
    assert b"contracts" in client.get("/registry/").content
    page = client.get("/registry/contracts/")
    assert page.status_code == 200 and b"first run" in page.content and b"v1" in page.content
    client.force_login(bob)
    assert b"contracts" not in client.get("/registry/").content
    assert client.get("/registry/contracts/").status_code == 404


def test_a_names_versions_page_back_by_version_number(alice_api, alice):
    for label in "abcde":
        services.model_create(owner=alice, name=label, base_model="tiny", registered_name="contracts")
    first = alice_api.get("/api/v1/registry/contracts?versions=2").json()
    assert [row["version"] for row in first["versions"]] == [5, 4]
    second = alice_api.get(first["older_versions"] + "&versions=2").json()
    assert [row["version"] for row in second["versions"]] == [3, 2]
    assert alice_api.get("/api/v1/registry/contracts?versions=0").status_code == 400
