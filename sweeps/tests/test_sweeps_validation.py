"""A sweep may name a validation dataset: every trial validates on the same records, so their figures compare."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from jobs import services as job_services
from jobs.models import Job
from sweeps import services
from sweeps.models import Sweep, SweepTrial
from tests.factories import chat_records

API = "/api/v1/sweeps"


def chat_set(owner, name: str, start: int = 0):
    data = "".join(json.dumps(record) + "\n" for record in chat_records(12, start=start)).encode()
    return job_services.dataset_create(owner=owner, uploaded_file=SimpleUploadedFile(f"{name}.jsonl", data))


@pytest.fixture
def chats(alice, local_storage, demo_base_entry):
    return chat_set(alice, "train"), chat_set(alice, "held-out", start=100)


def lora_sweep(training, validation, **overrides) -> dict:
    body = {
        "name": "rates",
        "trainer": "lora-sft",
        "dataset": training.id,
        "validation_dataset": validation.id if validation is not None else None,
        "base_model": "demo-base",
        "strategy": "grid",
        "search_space": {"learning_rate": [0.01, 0.02]},
        "concurrency": 1,
        "test_set_path": validation.path if validation is not None else training.path,
        "registered_name": "rates",
    }
    return {**body, **overrides}


def test_every_trial_of_a_sweep_validates_on_its_validation_dataset(
    alice_api, chats, django_capture_on_commit_callbacks
):
    training, validation = chats
    with django_capture_on_commit_callbacks(execute=False):
        created = alice_api.post(API, lora_sweep(training, validation, concurrency=2), format="json")
        services.sweep_advance(sweep_id=created.json()["id"])

    assert created.status_code == 201, created.content
    assert created.json()["validation_dataset"] == validation.id
    jobs = Job.objects.filter(sweep_trial__sweep_id=created.json()["id"])
    assert [(job.dataset_id, job.validation_dataset_id) for job in jobs] == [(training.id, validation.id)] * 2


def test_a_trial_is_not_started_once_the_validation_dataset_is_deleted(
    alice, alice_api, chats, django_capture_on_commit_callbacks
):
    training, validation = chats
    with django_capture_on_commit_callbacks(execute=False):
        sweep_id = alice_api.post(API, lora_sweep(training, validation), format="json").json()["id"]
        services.sweep_advance(sweep_id=sweep_id)
        first = SweepTrial.objects.get(sweep_id=sweep_id, index=1).job
        job_services.job_cancel(job_id=first.id)
        job_services.dataset_delete(dataset_id=validation.id)
        services.sweep_advance(sweep_id=sweep_id)

    second = SweepTrial.objects.get(sweep_id=sweep_id, index=2)
    assert second.job is None
    assert second.error == "job not created: the sweep's validation dataset 'held-out' was deleted"
    page = alice_api.get(f"{API}/{sweep_id}").json()
    assert page["validation_dataset"] is None


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"trainer": "example", "search_space": {"epochs": [1, 2]}}, "takes no validation dataset"),
        ("training set itself", "is the training dataset"),
        ("bob's", "no dataset #"),
    ],
)
def test_a_validation_dataset_a_trial_could_not_use_is_refused_before_any_trial(alice_api, bob, chats, change, says):
    training, validation = chats
    body = lora_sweep(training, validation)
    if change == "training set itself":
        body["validation_dataset"] = training.id
    elif change == "bob's":
        body["validation_dataset"] = chat_set(bob, "bobs").id
    else:
        body.update(change)

    response = alice_api.post(API, body, format="json")

    assert response.status_code == 400, response.content
    assert says in response.json()["errors"]["validation_dataset"][0]
    assert not Sweep.objects.exists()


def test_the_sweep_form_offers_a_validation_set_and_the_page_shows_it(
    alice_browser, chats, django_capture_on_commit_callbacks
):
    training, validation = chats
    form = alice_browser.get("/sweeps/").content.decode()
    body = lora_sweep(training, validation)
    body["search_space"] = json.dumps(body["search_space"])
    with django_capture_on_commit_callbacks(execute=False):
        created = alice_browser.post("/sweeps/", body)

    assert 'name="validation_dataset"' in form
    assert created.status_code == 302, created.content.decode()[-1500:]
    page = alice_browser.get(created["Location"]).content.decode()
    assert "every trial validates on it" in page and "held-out" in page
