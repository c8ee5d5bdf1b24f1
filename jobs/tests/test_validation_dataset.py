"""A job may name a validation dataset of its own (trainers that take one: lora-sft), instead of holding out
a share of its training records; it is the owner's, of the same task, and kept while the job needs it."""

import pytest
from django.urls import reverse

from jobs.models import Dataset, Job
from tests.factories import chat_records, job_form_selects, sample_records

pytestmark = pytest.mark.django_db


def create(api, dataset, validation, *, trainer="lora-sft"):
    body = {"name": "j", "base_model": "demo-base", "dataset": dataset.id, "trainer": trainer}
    return api.post("/api/v1/jobs", {**body, "validation_dataset": validation.id}, format="json")


def test_a_job_validates_on_the_dataset_it_names(alice, alice_api, make_dataset, demo_base_entry):
    training, validation = make_dataset(alice, chat_records(20)), make_dataset(alice, chat_records(5), "valid.jsonl")

    response = create(alice_api, training, validation)

    assert response.status_code == 201, response.content
    assert response.json()["validation_dataset"] == validation.id
    assert Job.objects.get().validation_dataset == validation


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("bobs", "no dataset #{id} of yours"),
        ("same", "is the training dataset"),
        ("other task", "holds classification records, the training dataset generation records"),
        ("example trainer", "trainer 'example' holds out its own validation records"),
    ],
)
def test_a_validation_dataset_the_job_cannot_use_is_refused(
    alice, bob, alice_api, make_dataset, demo_base_entry, case, says
):
    training = make_dataset(alice, chat_records(20))
    validation = {
        "bobs": lambda: make_dataset(bob, chat_records(5)),
        "same": lambda: training,
        "other task": lambda: make_dataset(alice, sample_records(6), "labels.jsonl"),
        "example trainer": lambda: make_dataset(alice, chat_records(5), "valid.jsonl"),
    }[case]()

    response = create(alice_api, training, validation, trainer="example" if case == "example trainer" else "lora-sft")

    assert response.status_code == 400, response.content
    (message,) = response.json()["errors"]["validation_dataset"]
    assert message.startswith(says.format(id=validation.id))
    assert not Job.objects.exists()


def test_a_dataset_is_kept_while_an_unfinished_job_validates_on_it(alice, alice_api, make_dataset, demo_base_entry):
    training, validation = make_dataset(alice, chat_records(20)), make_dataset(alice, chat_records(5), "valid.jsonl")
    job = Job.objects.get(id=create(alice_api, training, validation).json()["id"])

    refused = alice_api.delete(f"/api/v1/datasets/{validation.id}")
    alice_api.post(f"/api/v1/jobs/{job.id}/cancel")
    deleted = alice_api.delete(f"/api/v1/datasets/{validation.id}")

    assert refused.status_code == 409 and f"#{job.id}" in refused.json()["detail"]
    assert deleted.status_code == 204 and not Dataset.objects.filter(id=validation.id).exists()
    job.refresh_from_db()
    assert job.validation_dataset is None and job.dataset == training


def test_the_job_form_offers_a_validation_dataset_to_trainers_that_take_one(
    alice, alice_browser, make_dataset, demo_base_entry, tasks_not_run
):
    training, validation = make_dataset(alice, chat_records(20)), make_dataset(alice, chat_records(5), "valid.jsonl")

    lora_form = alice_browser.get(reverse("job-create"), {"trainer": "lora-sft"}).content.decode()
    example_form = alice_browser.get(reverse("job-create"), {"trainer": "example"}).content.decode()
    response = alice_browser.post(
        reverse("job-create"),
        {
            "name": "validated",
            "base_model": "demo-base",
            "dataset": training.pk,
            "validation_dataset": validation.pk,
            "trainer": "lora-sft",
            **job_form_selects("lora-sft"),
        },
    )

    assert 'name="validation_dataset"' in lora_form and 'name="validation_dataset"' not in example_form
    job = Job.objects.get()
    assert response.status_code == 302 and job.validation_dataset == validation
    page = alice_browser.get(reverse("job-detail", args=[job.pk])).content.decode()
    assert "Validation dataset" in page and reverse("dataset-detail", args=[validation.pk]) in page
    assert "not used: the job validates on its validation dataset" in page
    dataset_page = alice_browser.get(reverse("dataset-detail", args=[validation.pk])).content.decode()
    assert "Jobs validating on this dataset" in dataset_page and reverse("job-detail", args=[job.pk]) in dataset_page
