import io

import pytest
from django.urls import reverse

from jobs import services
from jobs.models import Dataset, Job, JobMetric

from .conftest import SAMPLE_ROWS, jsonl

pytestmark = pytest.mark.django_db


def test_pages_redirect_anonymous_visitors_to_login(client):
    for name in ("job-list", "job-create", "dataset-list"):
        response = client.get(reverse(name))
        assert response.status_code == 302 and "/login" in response["Location"]


def test_the_dataset_page_uploads_and_shows_label_counts(alice_browser):
    # Labels belong to text/label records (classification); the Alpaca sample rows have none.
    handle = io.BytesIO(jsonl([{"text": row["input"], "label": row["output"]} for row in SAMPLE_ROWS]))
    handle.name = "contracts.jsonl"
    response = alice_browser.post(reverse("dataset-list"), {"file": handle, "name": "Contracts"})
    dataset = Dataset.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("dataset-detail", args=[dataset.pk])
    page = alice_browser.get(response["Location"]).content.decode()
    assert "Contracts" in page and "payment_terms" in page and "60.0 %" in page
    assert '<td class="num">12</td>' in page


def test_the_dataset_page_shows_the_bad_line_beside_the_field(alice_browser):
    handle = io.BytesIO(b'{"text": "ok", "label": "a"}\n{"text": 1, "label": "b"}\n')
    handle.name = "bad.jsonl"
    response = alice_browser.post(reverse("dataset-list"), {"file": handle})
    assert response.status_code == 400
    assert "line 2: field &#x27;text&#x27; must be a non-empty string" in response.content.decode()


def test_the_dataset_page_refuses_a_large_upload_with_413(alice_browser, settings):
    settings.DATASET_MAX_UPLOAD_BYTES = 1024
    handle = io.BytesIO(jsonl(SAMPLE_ROWS * 3))
    handle.name = "big.jsonl"
    response = alice_browser.post(reverse("dataset-list"), {"file": handle})
    assert response.status_code == 413
    assert "larger than the limit of 1024 bytes" in response.content.decode()


def test_a_dataset_is_deleted_after_confirmation(alice_browser, alice, make_dataset):
    dataset = make_dataset(alice)
    assert "Delete “train”?" in alice_browser.get(reverse("dataset-delete", args=[dataset.pk])).content.decode()
    response = alice_browser.post(reverse("dataset-delete", args=[dataset.pk]))
    assert response.status_code == 302
    assert not Dataset.objects.exists()


def test_the_new_job_form_prefills_defaults_and_shows_errors_beside_fields(alice_browser, alice, make_dataset):
    dataset = make_dataset(alice)
    page = alice_browser.get(reverse("job-create")).content.decode()
    assert 'name="hp_epochs"' in page and 'value="10"' in page
    assert "scikit-learn" in page
    assert "lora-sft" in page
    response = alice_browser.post(
        reverse("job-create"),
        {
            "name": "x",
            "base_model": "tiny",
            "dataset": dataset.pk,
            "trainer": "example",
            "hp_epochs": "0",
            "hp_loss": "log_loss",
        },
    )
    assert response.status_code == 200
    assert '<p class="field-error" role="alert">must be at least 1</p>' in response.content.decode()
    assert not Job.objects.exists()


def test_the_new_job_form_creates_a_job(alice_browser, alice, make_dataset, tasks_not_run):
    dataset = make_dataset(alice)
    response = alice_browser.post(
        reverse("job-create"),
        {
            "name": "from the page",
            "base_model": "tiny",
            "dataset": dataset.pk,
            "trainer": "example",
            "hp_epochs": "4",
            "hp_loss": "hinge",
            "hp_learning_rate": "",
        },
    )
    job = Job.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("job-detail", args=[job.pk])
    assert job.hyperparameters["epochs"] == 4 and job.hyperparameters["loss"] == "hinge"
    assert job.hyperparameters["learning_rate"] == 0.5


def test_the_job_pages_show_status_progress_chart_data_and_cancel(
    alice_browser, bob, client, alice, make_dataset, queued_job
):
    job = queued_job(alice, make_dataset(alice), "example")
    services.job_claim(job_id=job.id, lease_owner="me")
    services.job_metrics_record(job_id=job.id, points=[{"step": 5, "loss": 0.9, "total_steps": 10}])
    assert JobMetric.objects.count() == 1
    listing = alice_browser.get(reverse("job-list")).content.decode()
    assert f'data-job-id="{job.pk}"' in listing and 'class="badge running"' in listing
    detail = alice_browser.get(reverse("job-detail", args=[job.pk])).content.decode()
    assert 'style="width: 50%"' in detail
    assert '"loss": 0.9' in detail  # chart points for Chart.js
    assert 'class="log-panel"' in detail
    assert reverse("job-cancel", args=[job.pk]) in detail
    response = alice_browser.post(reverse("job-cancel", args=[job.pk]))
    assert response.status_code == 302
    assert Job.objects.get(id=job.id).status == "cancelled"
    client.force_login(bob)
    assert client.get(reverse("job-detail", args=[job.pk])).status_code == 404
    assert client.post(reverse("job-delete", args=[job.pk])).status_code == 404


def test_the_job_page_shows_the_jobs_labels(alice_browser, alice, alice_api, make_dataset, tasks_not_run):
    body = {"name": "labelled", "base_model": "tiny", "dataset": make_dataset(alice).id, "trainer": "example"}
    job = alice_api.post("/api/v1/jobs", {**body, "metadata": {"team": "support"}}, format="json").json()

    page = alice_browser.get(reverse("job-detail", args=[job["id"]])).content.decode()

    assert "<dt>Labels</dt><dd><code>team=support</code></dd>" in page
