"""OpenAI's files and fine-tuning endpoints at /openai/v1/: the requests OpenAI's SDKs send, the studio's answers.

A file is a dataset, a fine-tuning job a lora-sft job; what the studio cannot do as asked is refused with
OpenAI's error object naming the parameter, and nobody reaches what is not theirs.
"""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token

from jobs.models import Dataset, Job
from logs_app.services import log_lines_append
from tests.factories import chat_records, jsonl, make_job, make_model, preference_records

from .conftest import error_of

pytestmark = pytest.mark.django_db

BASE = "/openai/v1"
ARTIFACTS = {"adapter_model.safetensors": b"weights"}
DEMO_PRESET_LEARNING_RATE = 0.02


def upload(client, records=None, *, filename="train.jsonl", purpose="fine-tune", raw: bytes | None = None):
    data = raw if raw is not None else jsonl(records or chat_records())
    return client.post(
        f"{BASE}/files", {"file": SimpleUploadedFile(filename, data), "purpose": purpose}, format="multipart"
    )


def create_job(client, file_id: str, **body):
    return client.post(f"{BASE}/fine_tuning/jobs", {"model": "demo-base", "training_file": file_id, **body})


# --- files -----------------------------------------------------------------------------------------------


def test_a_fine_tune_file_becomes_a_dataset_shown_as_openais_file_object(alice, alice_openai):
    response = upload(alice_openai)

    assert response.status_code == 200, response.content
    file = response.json()
    dataset = Dataset.objects.get(owner=alice)
    assert file["id"] == f"file-{dataset.id}"
    assert file["object"] == "file" and file["purpose"] == "fine-tune" and file["status"] == "processed"
    assert file["bytes"] == dataset.size_bytes == len(jsonl(chat_records()))
    assert file["filename"] == "train.jsonl"
    assert file["studio"]["records"] == 12 and file["studio"]["format"] == "openai_chat"
    assert alice_openai.get(f"{BASE}/files/{file['id']}").json() == file


def test_a_file_with_a_bad_record_is_refused_naming_the_line_and_nothing_is_kept(alice_openai):
    raw = jsonl(chat_records(2)) + b'{"messages": [{"role": "user", "content": "no answer"}]}\n'

    error = error_of(response := upload(alice_openai, raw=raw))

    assert response.status_code == 400
    assert error["param"] == "file" and "line 3" in error["message"] and error["type"] == "invalid_request_error"
    assert not Dataset.objects.exists()


def test_a_file_over_the_upload_limit_is_a_413_and_nothing_is_kept(alice_openai, settings):
    settings.DATASET_MAX_UPLOAD_BYTES = 2048

    response = upload(alice_openai, chat_records(100))

    assert response.status_code == 413 and "2048" in error_of(response)["message"]
    assert not Dataset.objects.exists()


def test_a_purpose_other_than_fine_tune_is_refused(alice_openai):
    error = error_of(response := upload(alice_openai, purpose="assistants"))

    assert response.status_code == 400
    assert error["param"] == "purpose" and "fine-tune" in error["message"]
    assert not Dataset.objects.exists()


def test_files_list_newest_first_in_pages_that_follow_the_last_id(alice, alice_openai):
    ids = [upload(alice_openai, filename=f"f{i}.jsonl").json()["id"] for i in range(3)]

    first = alice_openai.get(f"{BASE}/files", {"limit": 2}).json()
    rest = alice_openai.get(f"{BASE}/files", {"limit": 2, "after": first["last_id"]}).json()
    oldest_first = alice_openai.get(f"{BASE}/files", {"order": "asc"}).json()

    assert [f["id"] for f in first["data"]] == ids[::-1][:2] and first["has_more"] is True
    assert [f["id"] for f in rest["data"]] == ids[:1] and rest["has_more"] is False
    assert [f["id"] for f in oldest_first["data"]] == ids
    assert alice_openai.get(f"{BASE}/files", {"purpose": "batch"}).json()["data"] == []


def test_a_files_content_is_the_bytes_uploaded(alice_openai):
    file = upload(alice_openai).json()

    response = alice_openai.get(f"{BASE}/files/{file['id']}/content")

    assert response.status_code == 200
    assert b"".join(response.streaming_content) == jsonl(chat_records())


def test_deleting_a_file_deletes_the_dataset_unless_an_unfinished_job_uses_it(alice, alice_openai, demo_base_entry):
    used = upload(alice_openai).json()["id"]
    free = upload(alice_openai, filename="other.jsonl").json()["id"]
    create_job(alice_openai, used)

    refused = alice_openai.delete(f"{BASE}/files/{used}")
    deleted = alice_openai.delete(f"{BASE}/files/{free}")

    assert refused.status_code == 409 and "unfinished job" in error_of(refused)["message"]
    assert deleted.json() == {"id": free, "object": "file", "deleted": True}
    assert list(Dataset.objects.values_list("id", flat=True)) == [int(used.removeprefix("file-"))]


# --- fine-tuning jobs --------------------------------------------------------------------------------


def test_a_fine_tuning_job_is_a_lora_sft_job_with_openais_hyperparameters_mapped(alice, alice_openai, demo_base_entry):
    file = upload(alice_openai).json()

    response = create_job(
        alice_openai,
        file["id"],
        suffix="arithmetic",
        seed=7,
        hyperparameters={"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 0.5},
    )

    assert response.status_code == 200, response.content
    body = response.json()
    job = Job.objects.get(owner=alice)
    assert body["id"] == f"ftjob-{job.id}" and body["object"] == "fine_tuning.job"
    assert body["status"] == "queued" and body["model"] == "demo-base" and body["training_file"] == file["id"]
    assert body["fine_tuned_model"] is None and body["error"] is None and body["seed"] == 7
    assert body["hyperparameters"] == {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 0.5}
    assert body["method"] == {"type": "supervised", "supervised": {"hyperparameters": body["hyperparameters"]}}
    assert job.trainer.name == "lora-sft" and job.registered_name == "arithmetic" and job.name == "arithmetic"
    # "auto" values keep the base's preset: one explicit value changes only itself.
    assert job.hyperparameters["epochs"] == 2 and job.hyperparameters["batch_size"] == 4
    assert job.hyperparameters["learning_rate"] == pytest.approx(DEMO_PRESET_LEARNING_RATE * 0.5)
    assert job.hyperparameters["validation_fraction"] == 0.2 and job.hyperparameters["seed"] == 7


def test_a_validation_file_is_the_jobs_validation_dataset(alice, alice_openai, demo_base_entry):
    training = upload(alice_openai).json()["id"]
    validation = upload(alice_openai, chat_records(4), filename="valid.jsonl").json()["id"]

    response = create_job(alice_openai, training, validation_file=validation)

    assert response.status_code == 200, response.content
    assert response.json()["validation_file"] == validation
    assert Job.objects.get(owner=alice).validation_dataset_id == int(validation.removeprefix("file-"))


def test_the_training_file_cannot_be_its_own_validation_file(alice_openai, demo_base_entry):
    training = upload(alice_openai).json()["id"]

    response = create_job(alice_openai, training, validation_file=training)

    assert response.status_code == 400
    error = error_of(response)
    assert error["param"] == "validation_file" and "is the training dataset" in error["message"]


def test_an_openai_model_name_the_operator_maps_trains_that_base(alice, alice_openai, demo_base_entry, settings):
    settings.OPENAI_COMPAT_MODELS = {"gpt-4o-mini-2024-07-18": "demo-base", "gpt-4.1-mini": "not-installed"}
    file = upload(alice_openai).json()["id"]

    response = create_job(alice_openai, file, model="gpt-4o-mini-2024-07-18")
    unmapped = create_job(alice_openai, file, model="gpt-3.5-turbo")
    listed = [model["id"] for model in alice_openai.get(f"{BASE}/models").json()["data"]]

    assert response.status_code == 200, response.content
    job = Job.objects.get(owner=alice)
    assert job.base_model == "demo-base" and job.preset == "demo-base"  # the base's preset, as for its own name
    assert response.json()["model"] == "demo-base"
    assert listed == ["demo-base", "gpt-4o-mini-2024-07-18"]  # a mapping to a base not installed is not offered
    mapped = alice_openai.get(f"{BASE}/models/gpt-4o-mini-2024-07-18").json()
    assert mapped["owned_by"] == "studio" and mapped["studio"]["base_model"] == "demo-base"
    error = error_of(unmapped)
    assert error["param"] == "model" and "OPENAI_COMPAT_MODELS" in error["message"]


def test_hyperparameters_given_in_the_supervised_method_count_as_well(alice, alice_openai, demo_base_entry):
    file = upload(alice_openai).json()
    method = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3, "batch_size": "auto"}}}

    response = create_job(alice_openai, file["id"], method=method)

    assert response.status_code == 200, response.content
    job = Job.objects.get(owner=alice)
    assert job.hyperparameters["epochs"] == 3 and job.hyperparameters["batch_size"] == 16  # the preset's


def test_all_auto_gives_the_bases_preset(alice, alice_openai, demo_base_entry):
    file = upload(alice_openai).json()

    response = create_job(alice_openai, file["id"], hyperparameters={"n_epochs": "auto"})

    assert response.status_code == 200, response.content
    assert Job.objects.get(owner=alice).preset == "demo-base"
    assert response.json()["hyperparameters"]["learning_rate_multiplier"] == 1.0


def test_a_dpo_job_on_preference_records_is_a_lora_dpo_job_with_beta(alice, alice_openai, demo_base_entry):
    pairs = upload(alice_openai, raw=jsonl(preference_records(12)), filename="pairs.jsonl").json()
    hyperparameters = {"beta": 0.2, "n_epochs": 2}

    response = create_job(
        alice_openai, pairs["id"], suffix="polite", method={"type": "dpo", "dpo": {"hyperparameters": hyperparameters}}
    )

    assert response.status_code == 200, response.content
    job = Job.objects.get(owner=alice)
    assert job.trainer.name == "lora-dpo" and job.hyperparameters["beta"] == 0.2 and job.hyperparameters["epochs"] == 2
    body = response.json()
    assert body["method"]["type"] == "dpo" and body["method"]["dpo"]["hyperparameters"]["beta"] == 0.2
    assert pairs["studio"]["format"] == "preference"


def test_a_fine_tuned_model_named_as_the_model_is_trained_further_into_its_next_version(
    alice, bob, alice_openai, demo_base_entry
):
    from models_app.models import RegisteredName

    adapter = {
        "lora_adapters/adapter_config.json": json.dumps({"peft_type": "LORA", "r": 4}).encode(),
        "lora_adapters/adapter_model.safetensors": b"weights",
    }
    support_bot = RegisteredName.objects.create(owner=alice, name="support-bot", last_version=1)
    v1 = make_model(
        alice, name="support", base_model="demo-base", files=adapter, registered_name=support_bot, version=1
    )
    bobs = RegisteredName.objects.create(owner=bob, name="bobs-bot", last_version=1)
    make_model(bob, name="bob's", base_model="demo-base", files=adapter, registered_name=bobs, version=1)
    pairs = upload(alice_openai, raw=jsonl(preference_records(12)), filename="pairs.jsonl").json()

    response = create_job(alice_openai, pairs["id"], model="support-bot:v1", method={"type": "dpo"})
    refused = create_job(alice_openai, pairs["id"], model="bobs-bot:v1")

    assert response.status_code == 200, response.content
    assert response.json()["model"] == "support-bot:v1"
    job = Job.objects.get(owner=alice)
    assert job.trainer.name == "lora-dpo" and job.base_model == "demo-base"
    assert job.initial_adapter["model_id"] == v1.id and job.registered_name == "support-bot"
    assert refused.status_code == 400 and error_of(refused)["param"] == "model"
    assert "'bobs-bot:v1' is not a fine-tuned model of yours" in error_of(refused)["message"]


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        ({"model": "gpt-4o-mini-2024-07-18"}, "model", "demo-base"),
        ({"training_file": "file-999999"}, "training_file", "no file 'file-999999' of yours"),
        ({"training_file": "not-a-file-id"}, "training_file", "no file"),
        ({"hyperparameters": {"n_epochs": 5000}}, "hyperparameters.n_epochs", "1000"),
        ({"hyperparameters": {"n_epochs": 0}}, "hyperparameters.n_epochs", "positive integer"),
        ({"hyperparameters": {"n_epochs": 1.5}}, "hyperparameters.n_epochs", "positive integer"),
        ({"hyperparameters": {"learning_rate_multiplier": "fast"}}, "hyperparameters.learning_rate_multiplier", "auto"),
        ({"hyperparameters": {"warmup": 3}}, "hyperparameters.warmup", "n_epochs, batch_size"),
        ({"method": {"type": "dpo", "dpo": {}}}, "training_file", "method dpo trains on preference records"),
        (
            {"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0}}}},
            "method.dpo.hyperparameters.beta",
            "auto",
        ),
        ({"method": {"type": "reinforcement"}}, "method.type", "by preference (dpo"),
        (
            {"method": {"type": "supervised", "dpo": {"hyperparameters": {"beta": 0.2}}}},
            "method",
            "method.dpo is given but the type is 'supervised'",
        ),
        ({"validation_file": "file-999999"}, "validation_file", "no file 'file-999999' of yours"),
        ({"integrations": [{"type": "wandb", "wandb": {"project": "x"}}]}, "integrations", "events"),
        ({"metadata": {"team": 3}}, "metadata", "the value of 'team' must be a string"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata", "at most 16"),
        ({"metadata": ["team"]}, "metadata", "must be an object"),
        ({"suffix": "has spaces"}, "suffix", "not a valid registered name"),
        ({"suffix": "x" * 65}, "suffix", "64"),
        ({"seed": -1}, "seed", "0"),
        ({"temperature": 0.1}, "temperature", "Unknown field"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_a_job_the_studio_cannot_run_as_asked_is_refused_naming_the_parameter(
    alice_openai, demo_base_entry, body, param, says
):
    file = upload(alice_openai).json()

    response = create_job(alice_openai, file["id"], **body)

    error = error_of(response)
    assert response.status_code == 400, response.content
    assert error["param"] == param and says in error["message"], error
    assert not Job.objects.exists()


def test_hyperparameters_given_twice_are_refused(alice_openai, demo_base_entry):
    file = upload(alice_openai).json()
    method = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3}}}

    response = create_job(alice_openai, file["id"], method=method, hyperparameters={"n_epochs": 2})

    assert response.status_code == 400 and error_of(response)["param"] == "hyperparameters"
    assert not Job.objects.exists()


def test_jobs_list_newest_first_in_pages_that_follow_the_last_id(alice_openai, demo_base_entry):
    file = upload(alice_openai).json()
    ids = [create_job(alice_openai, file["id"]).json()["id"] for _ in range(3)]

    first = alice_openai.get(f"{BASE}/fine_tuning/jobs", {"limit": 2}).json()
    rest = alice_openai.get(f"{BASE}/fine_tuning/jobs", {"limit": 2, "after": first["last_id"]}).json()

    assert first["object"] == "list" and [j["id"] for j in first["data"]] == ids[::-1][:2] and first["has_more"]
    assert [j["id"] for j in rest["data"]] == ids[:1] and rest["has_more"] is False
    bad = alice_openai.get(f"{BASE}/fine_tuning/jobs", {"after": "file-3"})
    assert bad.status_code == 400 and error_of(bad)["param"] == "after"
    too_many = alice_openai.get(f"{BASE}/fine_tuning/jobs", {"limit": 101})
    assert too_many.status_code == 400 and error_of(too_many)["param"] == "limit"


def test_metadata_labels_a_job_and_lists_only_the_jobs_it_matches(alice, alice_openai, demo_base_entry):
    file = upload(alice_openai).json()["id"]
    support = create_job(alice_openai, file, metadata={"team": "support", "stage": "try 1", "a__b": 'say "hi"'}).json()
    sales = create_job(alice_openai, file, metadata={"team": "sales"}).json()
    unlabelled = create_job(alice_openai, file).json()

    def listed(query: str) -> list[str]:
        return [job["id"] for job in alice_openai.get(f"{BASE}/fine_tuning/jobs?{query}").json()["data"]]

    assert support["metadata"]["stage"] == "try 1" and unlabelled["metadata"] is None
    assert Job.objects.get(id=int(sales["id"].removeprefix("ftjob-"))).metadata == {"team": "sales"}
    assert listed("metadata[team]=support") == [support["id"]]
    assert listed("metadata[team]=sales&metadata[stage]=try+1") == []
    assert listed("metadata[stage]=try+1&metadata[team]=support") == [support["id"]]
    assert listed("metadata[a__b]=say+%22hi%22") == [support["id"]]  # one key, never a lookup path
    assert listed("metadata=null") == [unlabelled["id"]]
    assert listed("") == [unlabelled["id"], sales["id"], support["id"]]


def test_cancelling_a_job_answers_it_cancelled_and_a_second_cancel_is_a_conflict(alice_openai, demo_base_entry):
    job = create_job(alice_openai, upload(alice_openai).json()["id"]).json()

    cancelled = alice_openai.post(f"{BASE}/fine_tuning/jobs/{job['id']}/cancel")
    again = alice_openai.post(f"{BASE}/fine_tuning/jobs/{job['id']}/cancel")

    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["finished_at"] is not None
    assert again.status_code == 409 and "already cancelled" in error_of(again)["message"]


def test_a_failed_job_carries_its_reason_as_openais_error(alice, alice_openai):
    job = make_job(alice, status="failed", error_message="CUDA out of memory at step 3")

    body = alice_openai.get(f"{BASE}/fine_tuning/jobs/ftjob-{job.id}").json()

    assert body["status"] == "failed"
    assert body["error"] == {"code": "job_failed", "message": "CUDA out of memory at step 3", "param": None}


def test_a_succeeded_job_names_its_registry_version_as_the_fine_tuned_model(alice, alice_openai):
    from models_app.services import model_create_from_job

    job = make_job(
        alice,
        status="succeeded",
        trainer="external",
        registered_name="support-bot",
        metrics={"final": {"tokens": 12345, "loss": 0.4}},
        artifacts=ARTIFACTS,
    )
    model = model_create_from_job(job_id=job.id)

    body = alice_openai.get(f"{BASE}/fine_tuning/jobs/ftjob-{job.id}").json()

    assert body["status"] == "succeeded"
    assert body["fine_tuned_model"] == "support-bot:v1"
    assert body["trained_tokens"] == 12345
    assert body["studio"]["model"] == model.id and body["studio"]["model_url"] == f"/models/{model.id}/"


# --- models --------------------------------------------------------------------------------------------


@pytest.fixture
def alices_model(alice):
    from models_app.services import model_create_from_job

    job = make_job(alice, status="succeeded", trainer="external", registered_name="support-bot", artifacts=ARTIFACTS)
    return model_create_from_job(job_id=job.id)


def test_models_lists_your_fine_tuned_models_and_the_bases_a_job_may_name(alice_openai, alices_model, demo_base_entry):
    listed = alice_openai.get(f"{BASE}/models").json()

    assert listed["object"] == "list"
    assert [(model["id"], model["owned_by"]) for model in listed["data"]] == [
        ("support-bot:v1", f"user-{alices_model.owner_id}"),
        ("demo-base", "studio"),
    ]
    assert listed["data"][0]["studio"]["model"] == alices_model.id
    assert alice_openai.get(f"{BASE}/models/support-bot:v1").json() == listed["data"][0]
    assert alice_openai.get(f"{BASE}/models/demo-base").json() == listed["data"][1]
    assert alice_openai.get(f"{BASE}/models/support-bot:v2").status_code == 404


def test_a_model_registered_without_a_name_is_named_by_its_id(alice, alice_openai):
    model = make_model(alice, name="uploaded by hand")

    assert [entry["id"] for entry in alice_openai.get(f"{BASE}/models").json()["data"]] == [f"model-{model.id}"]
    assert alice_openai.get(f"{BASE}/models/model-{model.id}").json()["studio"]["model"] == model.id


def test_deleting_a_fine_tuned_model_deletes_it_from_the_registry(alice_openai, alices_model):
    from models_app.models import RegisteredModel

    response = alice_openai.delete(f"{BASE}/models/support-bot:v1")

    assert response.json() == {"id": "support-bot:v1", "object": "model", "deleted": True}
    assert not RegisteredModel.objects.filter(id=alices_model.id).exists()


def test_a_base_model_cannot_be_deleted(alice_openai, demo_base_entry):
    response = alice_openai.delete(f"{BASE}/models/demo-base")

    assert response.status_code == 403 and "base models" in error_of(response)["message"]


def test_bob_neither_sees_nor_deletes_alices_models(bob_openai, alices_model, olivia_openai):
    from models_app.models import RegisteredModel

    assert "support-bot:v1" not in [model["id"] for model in bob_openai.get(f"{BASE}/models").json()["data"]]
    assert bob_openai.get(f"{BASE}/models/support-bot:v1").status_code == 404
    assert bob_openai.delete(f"{BASE}/models/support-bot:v1").status_code == 404
    assert RegisteredModel.objects.filter(id=alices_model.id).exists()
    assert olivia_openai.get(f"{BASE}/models/support-bot:v1").json()["studio"]["model"] == alices_model.id


# --- checkpoints ---------------------------------------------------------------------------------------


def test_a_succeeded_jobs_one_checkpoint_is_its_registry_version_with_the_final_figures(alice, alice_openai):
    from models_app.services import model_create_from_job

    final = {"step": 40, "loss": 0.5, "eval_loss": 0.7, "eval_exact_match": 0.9}
    artifacts = {**ARTIFACTS, "metrics.json": json.dumps({"final": final}).encode()}
    job = make_job(alice, status="succeeded", trainer="external", registered_name="support-bot", artifacts=artifacts)
    model = model_create_from_job(job_id=job.id)

    listed = alice_openai.get(f"{BASE}/fine_tuning/jobs/ftjob-{job.id}/checkpoints").json()
    after = alice_openai.get(f"{BASE}/fine_tuning/jobs/ftjob-{job.id}/checkpoints", {"after": listed["last_id"]})

    (checkpoint,) = listed["data"]
    assert checkpoint["id"] == f"ftckpt-{model.id}" and checkpoint["object"] == "fine_tuning.job.checkpoint"
    assert checkpoint["fine_tuned_model_checkpoint"] == "support-bot:v1"
    assert checkpoint["fine_tuning_job_id"] == f"ftjob-{job.id}" and checkpoint["step_number"] == 40
    assert checkpoint["metrics"] == {
        "step": 40,
        "train_loss": 0.5,
        "valid_loss": 0.7,
        "full_valid_loss": 0.7,
        "eval_exact_match": 0.9,
    }
    assert after.json()["data"] == [] and after.json()["has_more"] is False


def test_an_unfinished_job_has_no_checkpoint_yet(alice, alice_openai):
    job = make_job(alice, status="running")

    assert alice_openai.get(f"{BASE}/fine_tuning/jobs/ftjob-{job.id}/checkpoints").json()["data"] == []


# --- results files ------------------------------------------------------------------------------------


def trained_job(owner, **fields):
    """A succeeded job with a registry version whose metrics.json holds 2 epochs of 4 steps, logged every 2."""
    from models_app.services import model_create_from_job

    metrics = {
        "final": {"step": 4, "total_steps": 4, "epoch": 2, "loss": 0.5, "eval_loss": 0.6, "eval_exact_match": 0.75},
        "history": [{"step": step, "loss": loss} for step, loss in ((2, 1.5), (4, 0.5))],
        "eval": [{"epoch": 1, "eval_loss": 0.9, "eval_exact_match": 0.5}, {"epoch": 2, "eval_loss": 0.6}],
    }
    artifacts = {**ARTIFACTS, "metrics.json": json.dumps(metrics).encode()}
    job = make_job(owner, status="succeeded", trainer="external", artifacts=artifacts, **fields)
    model_create_from_job(job_id=job.id)
    return job


def test_a_succeeded_jobs_results_file_holds_its_figures_per_step_as_csv(alice, alice_openai):
    job = trained_job(alice)

    (results_id,) = alice_openai.get(f"{BASE}/fine_tuning/jobs/ftjob-{job.id}").json()["result_files"]
    file = alice_openai.get(f"{BASE}/files/{results_id}").json()
    content = alice_openai.get(f"{BASE}/files/{results_id}/content")

    assert results_id == f"file-results-{job.id}"
    assert file["purpose"] == "fine-tune-results" and file["filename"] == f"step_metrics_ftjob-{job.id}.csv"
    assert content["Content-Type"] == "text/csv" and file["bytes"] == len(content.content)
    assert content.content.decode().splitlines() == [
        "step,train_loss,valid_loss,eval_exact_match",
        "2,1.5,0.9,0.5",
        "4,0.5,0.6,",
    ]
    refused = alice_openai.delete(f"{BASE}/files/{results_id}")
    assert refused.status_code == 409 and "cannot be deleted" in error_of(refused)["message"]


def test_an_unfinished_job_has_no_results_file_and_others_never_see_one(alice, alice_openai, bob_openai):
    running = make_job(alice, status="running")
    done = trained_job(alice)

    assert alice_openai.get(f"{BASE}/fine_tuning/jobs/ftjob-{running.id}").json()["result_files"] == []
    assert alice_openai.get(f"{BASE}/files/file-results-{running.id}").status_code == 404
    assert bob_openai.get(f"{BASE}/files/file-results-{done.id}").status_code == 404
    assert bob_openai.get(f"{BASE}/files/file-results-{done.id}/content").status_code == 404


# --- events -------------------------------------------------------------------------------------------


def test_events_are_the_jobs_log_newest_first_with_metrics_lines_as_metrics_events(alice, alice_openai):
    job = make_job(alice)
    log_lines_append(
        job_id=job.id,
        lines=[
            {"level": "INFO", "message": "base model demo-base"},
            {"level": "WARN", "message": "3 records were cut to max_length"},
            {"message": json.dumps({"step": 10, "total_steps": 20, "loss": 1.25, "learning_rate": 0.01})},
            {"message": json.dumps({"epoch": 1, "eval_loss": 1.5, "eval_exact_match": 0.25})},
            {"level": "ERROR", "message": "something failed"},
        ],
    )

    first = alice_openai.get(f"{BASE}/fine_tuning/jobs/ftjob-{job.id}/events", {"limit": 3}).json()
    rest = alice_openai.get(
        f"{BASE}/fine_tuning/jobs/ftjob-{job.id}/events", {"limit": 3, "after": first["last_id"]}
    ).json()

    events = first["data"] + rest["data"]
    assert first["has_more"] is True and rest["has_more"] is False
    assert [event["id"] for event in events] == [f"ftevent-{job.id}-{seq}" for seq in (5, 4, 3, 2, 1)]
    assert [(event["level"], event["type"]) for event in events] == [
        ("error", "message"),
        ("info", "metrics"),
        ("info", "metrics"),
        ("warn", "message"),
        ("info", "message"),
    ]
    assert events[2]["message"] == "Step 10/20: training loss=1.25"
    assert events[2]["data"]["train_loss"] == 1.25 and events[2]["data"]["step"] == 10
    assert events[1]["data"]["valid_loss"] == 1.5 and events[1]["data"]["eval_exact_match"] == 0.25
    assert events[4]["message"] == "base model demo-base" and events[4]["object"] == "fine_tuning.job.event"


def test_an_event_cursor_of_another_job_is_refused(alice, alice_openai):
    job = make_job(alice)
    other = make_job(alice)

    response = alice_openai.get(f"{BASE}/fine_tuning/jobs/ftjob-{job.id}/events", {"after": f"ftevent-{other.id}-1"})

    assert response.status_code == 400 and error_of(response)["param"] == "after"


def test_a_job_with_no_log_yet_has_no_events(alice, alice_openai):
    job = make_job(alice, status="queued")

    assert alice_openai.get(f"{BASE}/fine_tuning/jobs/ftjob-{job.id}/events").json()["data"] == []


# --- who may do what ------------------------------------------------------------------------------------


@pytest.fixture
def alices_things(alice, alice_openai, demo_base_entry):
    file = upload(alice_openai).json()
    job = create_job(alice_openai, file["id"]).json()
    finished = make_job(alice, status="failed")
    return {"file": file["id"], "job": job["id"], "finished": f"ftjob-{finished.id}"}


OBJECT_REQUESTS = [
    ("get", "/files/{file}"),
    ("get", "/files/{file}/content"),
    ("delete", "/files/{finished_file}"),
    ("get", "/fine_tuning/jobs/{job}"),
    ("post", "/fine_tuning/jobs/{job}/cancel"),
    ("get", "/fine_tuning/jobs/{job}/events"),
    ("get", "/fine_tuning/jobs/{job}/checkpoints"),
]


def send(client, method: str, path: str, things: dict):
    url = BASE + path.format(finished_file=things["file"], **things)
    return getattr(client, method)(url)


def test_bob_gets_404_on_each_of_alices_files_and_jobs_and_changes_nothing(alices_things, bob_openai):
    before = (list(Dataset.objects.values_list("id", flat=True)), list(Job.objects.values_list("id", "status")))

    answers = {path: send(bob_openai, method, path, alices_things).status_code for method, path in OBJECT_REQUESTS}

    assert answers == dict.fromkeys(answers, 404)
    assert (list(Dataset.objects.values_list("id", flat=True)), list(Job.objects.values_list("id", "status"))) == before
    assert bob_openai.get(f"{BASE}/files").json()["data"] == []
    assert bob_openai.get(f"{BASE}/fine_tuning/jobs").json()["data"] == []


def test_bob_cannot_train_on_alices_file(alices_things, bob, bob_openai):
    response = create_job(bob_openai, alices_things["file"])

    assert response.status_code == 400 and error_of(response)["param"] == "training_file"
    assert not Job.objects.filter(owner=bob).exists()


def test_staff_see_and_act_on_everyones(alices_things, olivia_openai):
    assert olivia_openai.get(f"{BASE}/files/{alices_things['file']}").status_code == 200
    listed = olivia_openai.get(f"{BASE}/fine_tuning/jobs").json()["data"]
    assert alices_things["job"] in [job["id"] for job in listed]
    cancelled = olivia_openai.post(f"{BASE}/fine_tuning/jobs/{alices_things['job']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"


@pytest.mark.parametrize(("method", "path"), [*OBJECT_REQUESTS, ("get", "/files"), ("get", "/fine_tuning/jobs")])
def test_a_request_without_a_valid_key_is_a_401_that_says_which_key(alices_things, anon_api, method, path):
    wrong_key = anon_api
    for client in (anon_api, wrong_key):
        response = send(client, method, path, alices_things)
        error = error_of(response)
        assert response.status_code == 401 and error["code"] == "invalid_api_key"
        assert "studio API token" in error["message"]
        wrong_key.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")
    assert Job.objects.get(id=int(alices_things["job"].removeprefix("ftjob-"))).status == "queued"


def test_the_studios_own_token_header_works_too(alices_things, alice_api):
    assert alice_api.get(f"{BASE}/fine_tuning/jobs/{alices_things['job']}").status_code == 200


def test_an_endpoint_the_studio_does_not_offer_is_a_404_listing_those_it_does(alices_things, alice_openai):
    response = alice_openai.post(f"{BASE}/fine_tuning/jobs/{alices_things['job']}/pause")
    legacy = alice_openai.post(f"{BASE}/completions", {"model": "demo-base", "prompt": "Hi"})

    assert response.status_code == 404 and legacy.status_code == 404
    message = error_of(response)["message"]
    assert "/pause is not offered" in message and "POST /fine_tuning/jobs/{id}/cancel" in message
    assert "POST /chat/completions" in error_of(legacy)["message"]


def test_a_malformed_body_is_a_400_in_openais_shape(alice_openai):
    response = alice_openai.post(f"{BASE}/fine_tuning/jobs", data=b'{"model": ', content_type="application/json")

    assert response.status_code == 400 and error_of(response)["type"] == "invalid_request_error"


def test_the_token_page_shows_the_new_key_as_an_openai_clients_key_and_it_works(alice, alice_browser, api_client_for):
    alice_browser.post(reverse("token-create"))
    key = Token.objects.get(user=alice).key

    page = alice_browser.get(reverse("token")).content.decode()

    assert f'OpenAI(base_url="http://testserver/openai/v1", api_key="{key}")' in page
    client = api_client_for(None)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert client.get(f"{BASE}/fine_tuning/jobs").status_code == 200


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
FIELDS = st.sampled_from(
    ["model", "training_file", "validation_file", "hyperparameters", "method", "suffix", "seed", "metadata", "x"]
)
HYPERPARAMETERS = st.dictionaries(
    st.sampled_from(["n_epochs", "batch_size", "learning_rate_multiplier", "x"]),
    st.just("auto") | st.integers(-5, 10**6) | st.floats(allow_nan=False, allow_infinity=False) | JSON,
    max_size=3,
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.dictionaries(FIELDS, JSON, max_size=4),
    hyperparameters=st.none() | HYPERPARAMETERS,
    method=st.none() | st.fixed_dictionaries({"type": st.just("supervised") | st.text(max_size=6)}),
)
def test_any_job_body_is_a_job_or_openais_error_never_a_500(
    alice, alice_openai, demo_base_entry, django_capture_on_commit_callbacks, body, hyperparameters, method
):
    file = Dataset.objects.filter(owner=alice).first()  # uploaded once: examples share the test's database
    file_id = f"file-{file.id}" if file else upload(alice_openai).json()["id"]
    request = {"model": "demo-base", "training_file": file_id, **body}
    if hyperparameters is not None:
        request["hyperparameters"] = hyperparameters
    if method is not None:
        request["method"] = method

    with django_capture_on_commit_callbacks(execute=False):  # a job that is created is not run
        response = alice_openai.post(f"{BASE}/fine_tuning/jobs", request)

    assert response.status_code in (200, 400), response.content[:300]
    if response.status_code == 400:
        assert error_of(response)["message"]
    else:
        assert response.json()["object"] == "fine_tuning.job"


def test_a_run_that_kept_an_earlier_epoch_has_that_epochs_end_as_its_checkpoint(alice, alice_openai):
    from models_app.services import model_create_from_job

    final = {"step": 90, "epoch": 9, "best_epoch": 7, "stopped_early": True, "loss": 0.2, "eval_loss": 0.5}
    history = [{"step": step, "loss": round(1 / step, 4)} for step in range(10, 91, 10)]
    metrics = {"final": final, "history": history}
    artifacts = {**ARTIFACTS, "metrics.json": json.dumps(metrics).encode()}
    job = make_job(alice, status="succeeded", trainer="external", registered_name="support-bot", artifacts=artifacts)
    model_create_from_job(job_id=job.id)

    (checkpoint,) = alice_openai.get(f"{BASE}/fine_tuning/jobs/ftjob-{job.id}/checkpoints").json()["data"]

    assert checkpoint["step_number"] == 70
    assert checkpoint["metrics"]["train_loss"] == round(1 / 70, 4) and checkpoint["metrics"]["valid_loss"] == 0.5
