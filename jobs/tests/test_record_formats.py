"""A trainer declares the record formats it trains on (``Trainer.record_formats``: lora-dpo takes preference
records only); a job, a validation dataset or a sweep of another format is refused when it is created, with the
formats named, instead of failing minutes later when the run reads the file."""

import pytest
from django.urls import reverse

from jobs.models import Job, Trainer
from sweeps.models import Sweep
from tests.factories import chat_records, job_form_selects, preference_records

pytestmark = pytest.mark.django_db

DPO_REFUSAL = "trainer 'lora-dpo' trains on preference (DPO) records; dataset #{id} holds OpenAI chat records"


def dpo_job(api, dataset, **fields):
    body = {"name": "prefs", "base_model": "demo-base", "dataset": dataset.id, "trainer": "lora-dpo", **fields}
    return api.post("/api/v1/jobs", body, format="json")


def test_the_trainers_list_says_which_formats_each_trainer_trains_on(alice_api):
    trainers = {entry["name"]: entry for entry in alice_api.get("/api/v1/trainers").json()["results"]}

    assert trainers["lora-dpo"]["record_formats"] == ["preference"]
    assert trainers["lora-sft"]["record_formats"] == []  # any: preference records train their preferred answers


def test_a_preference_trainer_is_refused_a_chat_dataset_and_no_job_is_made(
    alice, alice_api, make_dataset, demo_base_entry, tasks_not_run
):
    chats = make_dataset(alice, chat_records(12))

    response = dpo_job(alice_api, chats)

    assert response.status_code == 400, response.content
    assert response.json()["errors"]["dataset"] == [DPO_REFUSAL.format(id=chats.id)]
    assert not Job.objects.exists()


def test_a_preference_trainer_takes_preference_datasets_for_training_and_validation(
    alice, alice_api, make_dataset, demo_base_entry, tasks_not_run
):
    pairs = make_dataset(alice, preference_records(12), "pairs.jsonl")
    held_out = make_dataset(alice, preference_records(4), "held-out.jsonl")
    chats = make_dataset(alice, chat_records(4), "chats.jsonl")

    refused = dpo_job(alice_api, pairs, validation_dataset=chats.id)
    created = dpo_job(alice_api, pairs, validation_dataset=held_out.id)

    assert refused.status_code == 400, refused.content
    assert refused.json()["errors"]["validation_dataset"] == [DPO_REFUSAL.format(id=chats.id)]
    assert created.status_code == 201, created.content
    assert Job.objects.get().validation_dataset == held_out


def test_the_job_form_lists_only_the_datasets_the_chosen_trainer_trains_on(
    alice, alice_browser, make_dataset, demo_base_entry, tasks_not_run
):
    pairs = make_dataset(alice, preference_records(12), "pairs.jsonl", name="my pairs")
    make_dataset(alice, chat_records(12), "chats.jsonl", name="my chats")

    dpo_form = alice_browser.get(reverse("job-create"), {"trainer": "lora-dpo"}).content.decode()
    sft_form = alice_browser.get(reverse("job-create"), {"trainer": "lora-sft"}).content.decode()

    assert "my pairs" in dpo_form and "my chats" not in dpo_form
    assert "lora-dpo trains on preference (DPO) records" in dpo_form
    assert "my pairs" in sft_form and "my chats" in sft_form
    # Choosing another trainer in the form swaps in its datasets too, keeping the one chosen where it can.
    assert 'hx-select-oob="#dataset-field"' in sft_form and '<div id="dataset-field">' in dpo_form
    posted = alice_browser.post(
        reverse("job-create"),
        {
            "name": "prefs",
            "base_model": "demo-base",
            "dataset": pairs.pk,
            "trainer": "lora-dpo",
            **job_form_selects("lora-dpo"),
        },
    )
    assert posted.status_code == 302, posted.content.decode()[:2000]
    assert Job.objects.get().dataset == pairs


def test_a_trainer_with_no_dataset_of_its_format_says_which_to_upload(
    alice, alice_browser, make_dataset, demo_base_entry
):
    make_dataset(alice, chat_records(12), "chats.jsonl", name="my chats")

    form = alice_browser.get(reverse("job-create"), {"trainer": "lora-dpo"}).content.decode()

    assert "You have no preference (DPO) datasets yet" in form and "my chats" not in form


def test_train_on_it_picks_the_trainer_made_for_a_datasets_records(alice, alice_browser, make_dataset, demo_base_entry):
    pairs = make_dataset(alice, preference_records(12), "pairs.jsonl")
    chats = make_dataset(alice, chat_records(12), "chats.jsonl")

    for_pairs = alice_browser.get(reverse("job-create"), {"dataset": pairs.id}).content.decode()
    for_chats = alice_browser.get(reverse("job-create"), {"dataset": chats.id}).content.decode()

    assert '<option value="lora-dpo" selected' in for_pairs
    assert '<option value="example" selected' in for_chats  # the default, for any other records


def test_a_sweep_of_a_preference_trainer_is_refused_a_chat_dataset_before_any_trial(
    alice, alice_api, make_dataset, demo_base_entry, tasks_not_run
):
    chats = make_dataset(alice, chat_records(12))
    body = {
        "name": "betas",
        "trainer": "lora-dpo",
        "dataset": chats.id,
        "base_model": "demo-base",
        "strategy": "grid",
        "search_space": {"beta": [0.1, 0.5]},
        "test_set_path": chats.path,
    }

    response = alice_api.post("/api/v1/sweeps", body, format="json")

    assert response.status_code == 400, response.content
    assert response.json()["errors"]["dataset"] == [DPO_REFUSAL.format(id=chats.id)]
    assert not Sweep.objects.exists()


def test_an_operator_may_only_declare_formats_the_studio_reads(admin_client):
    trainer = Trainer.objects.get(name="lora-dpo")
    page = reverse("admin:jobs_trainer_change", args=[trainer.pk])
    form = admin_client.get(page).context["adminform"].form
    fields = {name: form.initial.get(name) for name in form.fields}

    def save(formats: str):
        data = {name: value for name, value in fields.items() if value is not None}
        data.update(
            {
                "record_formats": formats,
                "command": '["{python}", "-m", "trainers.lora_dpo"]',
                "hyperparameter_schema": form["hyperparameter_schema"].value(),
                "required_modules": form["required_modules"].value(),
                "presets": form["presets"].value(),
            }
        )
        return admin_client.post(page, data)

    refused = save('["preference", "parquet"]')
    saved = save('["preference", "openai_chat"]')

    assert refused.status_code == 200 and "A list of record formats among" in refused.content.decode()
    assert saved.status_code == 302
    trainer.refresh_from_db()
    assert trainer.record_formats == ["preference", "openai_chat"]
