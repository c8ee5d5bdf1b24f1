"""A sweep may train a registry version further: every trial starts from that version's adapter (a beta sweep of
lora-dpo on a lora-sft chat model), on its base, as versions of its name; what cannot be is refused before any
trial, and no trial starts from scratch once the version is gone."""

import json

import pytest

from jobs.models import Job
from models_app.models import RegisteredModel, RegisteredName
from sweeps import services
from sweeps.models import Sweep, SweepTrial
from tests.factories import make_model, preference_records

pytestmark = pytest.mark.django_db

API = "/api/v1/sweeps"
ADAPTER = {
    "lora_adapters/adapter_config.json": json.dumps({"peft_type": "LORA", "r": 4}).encode(),
    "lora_adapters/adapter_model.safetensors": b"weights",
}


@pytest.fixture
def chat_version(alice, demo_base_entry, local_storage):
    name = RegisteredName.objects.create(owner=alice, name="clauses", last_version=1)
    return make_model(alice, name="clauses v1", base_model="demo-base", files=ADAPTER, registered_name=name, version=1)


@pytest.fixture
def pairs(alice, make_dataset, local_storage):
    return make_dataset(alice, preference_records(12), "pairs.jsonl")


def beta_sweep(pairs, version, **overrides) -> dict:
    body = {
        "name": "betas",
        "trainer": "lora-dpo",
        "dataset": pairs.id,
        "initial_model": version.id,
        "strategy": "grid",
        "search_space": {"beta": [0.1, 0.5]},
        "concurrency": 2,
        "test_set_path": pairs.path,
    }
    return {**body, **overrides}


def test_every_trial_trains_the_version_further_as_versions_of_its_name(
    alice_api, pairs, chat_version, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        created = alice_api.post(API, beta_sweep(pairs, chat_version), format="json")
        services.sweep_advance(sweep_id=created.json()["id"])

    assert created.status_code == 201, created.content
    body = created.json()
    assert (body["initial_model"], body["initial_model_name"]) == (chat_version.id, "clauses:v1")
    assert (body["base_model"], body["registered_name"]) == ("demo-base", "clauses")
    jobs = Job.objects.filter(sweep_trial__sweep_id=body["id"]).order_by("id")
    assert [job.initial_adapter["model_id"] for job in jobs] == [chat_version.id] * 2
    assert [job.hyperparameters["beta"] for job in jobs] == [0.1, 0.5]


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({"trainer": "example", "search_space": {"epochs": [1, 2]}}, "initial_model", "starts every run afresh"),
        ({"initial_model": 999_999}, "initial_model", "no model #999999 of yours"),
        ({"base_model": "another-base"}, "base_model", "clauses:v1 is an adapter on demo-base"),
    ],
)
def test_a_version_the_trials_cannot_train_further_is_refused_before_any_trial(
    alice_api, pairs, chat_version, change, field, says
):
    response = alice_api.post(API, {**beta_sweep(pairs, chat_version), **change}, format="json")

    assert response.status_code == 400, response.content
    assert says in response.json()["errors"][field][0]
    assert not Sweep.objects.exists()


def test_no_trial_starts_from_scratch_once_the_version_is_deleted(
    alice_api, pairs, chat_version, django_capture_on_commit_callbacks
):
    from jobs import services as job_services
    from models_app.services import model_delete

    with django_capture_on_commit_callbacks(execute=False):
        sweep_id = alice_api.post(API, beta_sweep(pairs, chat_version, concurrency=1), format="json").json()["id"]
        services.sweep_advance(sweep_id=sweep_id)
        job_services.job_cancel(job_id=SweepTrial.objects.get(sweep_id=sweep_id, index=1).job_id)
        model_delete(model_id=chat_version.id)
        services.sweep_advance(sweep_id=sweep_id)

    second = SweepTrial.objects.get(sweep_id=sweep_id, index=2)
    assert second.job is None and not RegisteredModel.objects.filter(id=chat_version.id).exists()
    assert second.error == "job not created: clauses:v1, the version the sweep trains further, was deleted"


def test_the_sweep_form_offers_the_versions_to_train_further_and_the_page_shows_it(
    alice, alice_browser, pairs, chat_version, django_capture_on_commit_callbacks
):
    classifier = make_model(alice, name="classifier", files={"model.joblib": b"x"})
    form = alice_browser.get("/sweeps/").content.decode()
    with django_capture_on_commit_callbacks(execute=False):
        created = alice_browser.post(
            "/sweeps/",
            {**beta_sweep(pairs, chat_version), "search_space": json.dumps({"beta": [0.1, 0.5]}), "base_model": ""},
        )

    assert f'<option value="{chat_version.id}">clauses:v1 (clauses v1, on demo-base)</option>' in form
    assert f"{classifier.name}, on" not in form  # no LoRA adapter: nothing to train further
    assert created.status_code == 302, created.content.decode()[:2000]
    sweep = Sweep.objects.get()
    page = alice_browser.get(f"/sweeps/{sweep.id}/").content.decode()
    assert "Trains further" in page and f'href="/models/{chat_version.id}/">clauses:v1</a>' in page
