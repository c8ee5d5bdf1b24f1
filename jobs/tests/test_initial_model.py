"""A job may train a registry version further (``initial_model``): it starts from that version's LoRA adapter
instead of a new one, on the version's own base, and its model becomes the next version of the same name. What
cannot be trained further is refused when the job is created, and the version is kept while such a job needs it."""

import json

import pytest
from django.urls import reverse

from jobs.models import Job
from models_app.models import RegisteredModel, RegisteredName
from tests.factories import chat_records, job_form_selects, make_model

pytestmark = pytest.mark.django_db

ADAPTER = {
    "lora_adapters/adapter_config.json": json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8}).encode(),
    "lora_adapters/adapter_model.safetensors": b"weights",
}


def version(owner, *, name="clauses", number=1, files=ADAPTER, base_model="demo-base", **fields):
    registered, _ = RegisteredName.objects.get_or_create(owner=owner, name=name, defaults={"last_version": number})
    return make_model(
        owner,
        name=f"{name} v{number}",
        base_model=base_model,
        files=files,
        registered_name=registered,
        version=number,
        **fields,
    )


def further(api, model, dataset, **fields):
    body = {"name": "more", "dataset": dataset.id, "trainer": "lora-sft", "initial_model": model.id, **fields}
    return api.post("/api/v1/jobs", body, format="json")


@pytest.fixture
def chats(alice, make_dataset, demo_base_entry, tasks_not_run):
    return make_dataset(alice, chat_records(12))


def test_a_job_trains_a_version_further_on_its_base_into_the_next_version_of_its_name(alice, alice_api, chats):
    clauses = version(alice)

    response = further(alice_api, clauses, chats)

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["initial_model"] == {"id": clauses.id, "name": "clauses:v1"}
    assert body["base_model"] == "demo-base" and body["registered_name"] == "clauses"
    job = Job.objects.get()
    assert [item["path"] for item in job.initial_adapter["files"]] == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    assert all(item["key"].startswith(clauses.storage_path) for item in job.initial_adapter["files"])


@pytest.mark.parametrize(
    ("case", "field", "says"),
    [
        ("bob's", "initial_model", "no model #{id} of yours"),
        ("no adapter", "initial_model", "clauses:v1 has no LoRA adapter"),
        (
            "not ready",
            "initial_model",
            "clauses:v1 is uploading, not ready: only a ready version can be trained further",
        ),
        ("example trainer", "initial_model", "trainer 'example' starts every run afresh"),
        ("another base", "base_model", "clauses:v1 is an adapter on demo-base: train it further on that base"),
    ],
)
def test_what_cannot_be_trained_further_is_refused_naming_why(
    alice, bob, alice_api, chats, settings, case, field, says
):
    settings.BASE_MODELS = {**settings.BASE_MODELS, "other-base": str(settings.DEMO_BASE_DIR)}
    model = {
        "bob's": lambda: version(bob),
        "no adapter": lambda: version(alice, files={"model.joblib": b"x"}),
        "not ready": lambda: version(alice, status="uploading"),
    }.get(case, lambda: version(alice))()
    fields = {"trainer": "example"} if case == "example trainer" else {}
    if case == "another base":
        fields["base_model"] = "other-base"

    response = further(alice_api, model, chats, **fields)

    assert response.status_code == 400, response.content
    assert response.json()["errors"][field][0].startswith(says.format(id=model.id))
    assert not Job.objects.exists()


def test_a_version_is_kept_while_an_unfinished_job_trains_it_further(alice, alice_api, alice_browser, chats):
    clauses = version(alice)
    job_id = further(alice_api, clauses, chats).json()["id"]

    refused = alice_api.delete(f"/api/v1/models/{clauses.id}")
    page = alice_browser.post(reverse("model-delete", args=[clauses.id]), follow=True).content.decode()
    alice_api.post(f"/api/v1/jobs/{job_id}/cancel")
    deleted = alice_api.delete(f"/api/v1/models/{clauses.id}")

    assert refused.status_code == 409 and f"job #{job_id} trains clauses v1 further" in refused.json()["detail"]
    assert "was not deleted" in page and f"job #{job_id}" in page
    assert deleted.status_code == 204 and not RegisteredModel.objects.filter(id=clauses.id).exists()


def test_the_model_page_offers_to_train_it_further_and_the_form_says_where_the_run_starts(alice, alice_browser, chats):
    clauses = version(alice)
    joblib_model = make_model(alice, name="classifier", files={"model.joblib": b"x"})

    model_page = alice_browser.get(reverse("model-detail", args=[clauses.id])).content.decode()
    classifier_page = alice_browser.get(reverse("model-detail", args=[joblib_model.id])).content.decode()
    form = alice_browser.get(reverse("job-create"), {"initial_model": clauses.id, "trainer": "lora-sft"})
    posted = alice_browser.post(
        reverse("job-create"),
        {
            "name": "more",
            "base_model": "demo-base",
            "dataset": chats.id,
            "trainer": "lora-sft",
            "initial_model": clauses.id,
            **job_form_selects("lora-sft"),
        },
    )

    assert f"/jobs/new/?initial_model={clauses.id}&amp;trainer=lora-sft" in model_page
    assert "data-train-further" not in classifier_page
    page = form.content.decode()
    assert "Train clauses:v1 further" in page and f'name="initial_model" value="{clauses.id}"' in page
    assert 'value="demo-base"' in page
    assert posted.status_code == 302, posted.content.decode()[:3000]
    job = Job.objects.get()
    assert job.initial_adapter["name"] == "clauses:v1"
    job_page = alice_browser.get(reverse("job-detail", args=[job.id])).content.decode()
    assert "Trains further" in job_page and f'href="/models/{clauses.id}/"' in job_page


def test_the_form_says_why_a_version_cannot_be_trained_further(alice, bob, alice_browser, chats):
    bobs = version(bob)

    page = alice_browser.get(reverse("job-create"), {"initial_model": bobs.id, "trainer": "lora-sft"}).content.decode()

    assert f"no model #{bobs.id} of yours" in page and "Train " not in page.split("<h1>")[1].split("</h1>")[0]


def test_a_job_whose_version_vanished_from_storage_fails_before_its_trainer_starts(alice, alice_api, chats):
    from finetune_studio.objects import bucket
    from runner.services import run_job

    clauses = version(alice)
    job_id = further(alice_api, clauses, chats).json()["id"]
    bucket("models").delete(clauses.file_key("lora_adapters/adapter_model.safetensors"))  # storage edited by hand

    outcome = run_job(job_id=job_id)

    job = Job.objects.get(id=job_id)
    assert outcome == "failed" and job.status == Job.Status.FAILED
    assert job.error_message == (
        "not started: clauses:v1, the version this job trains further, was deleted (adapter_model.safetensors is gone)"
    )
