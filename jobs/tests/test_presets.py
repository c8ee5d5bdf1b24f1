"""Training presets: a trainer proposes hyperparameters that suit a base, and says what it applied."""

import json

import pytest

from jobs.models import Job

pytestmark = pytest.mark.django_db

DEMO_PRESET = {"epochs": 20, "learning_rate": 0.02, "batch_size": 16, "validation_fraction": 0.2}


@pytest.fixture
def demo_base(demo_base_entry, settings, tmp_path):
    settings.BASE_MODELS_DIR = tmp_path / "base-models"
    (settings.BASE_MODELS_DIR / "real-base").mkdir(parents=True)
    (settings.BASE_MODELS_DIR / "real-base" / "config.json").write_text(json.dumps({"model_type": "llama"}))


def create(api, dataset, base_model, **extra):
    body = {"name": "j", "base_model": base_model, "dataset": dataset.id, "trainer": "lora-sft", **extra}
    return api.post("/api/v1/jobs", body, format="json")


def test_a_job_that_names_no_hyperparameters_gets_its_bases_preset(alice_api, alice, make_dataset, demo_base):
    response = create(alice_api, make_dataset(alice), "demo-base")

    assert response.status_code == 201, response.content
    job = response.json()
    assert job["preset"] == "demo-base"
    assert {key: job["hyperparameters"][key] for key in DEMO_PRESET} == DEMO_PRESET
    assert job["hyperparameters"]["lora_r"] == 8  # the rest keeps the schema's defaults


def test_given_hyperparameters_are_the_users_own_and_no_preset_is_claimed(alice_api, alice, make_dataset, demo_base):
    response = create(alice_api, make_dataset(alice), "demo-base", hyperparameters={"epochs": 2})

    assert response.status_code == 201
    assert response.json()["preset"] == ""
    assert response.json()["hyperparameters"]["epochs"] == 2
    assert response.json()["hyperparameters"]["learning_rate"] == 2e-4


def test_a_base_without_a_preset_gets_the_trainers_defaults(alice_api, alice, make_dataset, demo_base):
    response = create(alice_api, make_dataset(alice), "real-base")

    assert response.status_code == 201
    assert response.json()["preset"] == ""
    assert response.json()["hyperparameters"]["epochs"] == 3


def test_the_job_form_proposes_the_preset_and_says_what_it_sets(alice_browser, demo_base):
    page = alice_browser.get("/jobs/new/?trainer=lora-sft&base_model=demo-base").content.decode()

    assert 'id="preset-note"' in page and "Preset for <code>demo-base</code>" in page
    assert 'name="hp_epochs" value="20"' in page and 'name="hp_learning_rate" value="0.02"' in page
    assert '<option value="demo-base">' in page and '<option value="real-base">' in page

    other = alice_browser.get("/jobs/new/?trainer=lora-sft&base_model=real-base").content.decode()
    assert 'id="preset-note"' not in other and 'name="hp_epochs" value="3"' in other


def test_a_job_started_from_the_form_with_the_preset_records_it(alice_browser, alice, make_dataset, demo_base):
    from jobs.forms import HP_PREFIX, JobForm
    from jobs.models import Trainer

    dataset = make_dataset(alice)
    # What a browser sends: every field of the form as the page filled it in (the preset for demo-base).
    proposed = JobForm(user=alice, trainer=Trainer.objects.get(name="lora-sft"), base_model="demo-base")
    form = {"name": "from the form", "base_model": "demo-base", "trainer": "lora-sft", "dataset": dataset.id}
    for name, field in proposed.fields.items():
        if name.startswith(HP_PREFIX) and field.initial not in (None, False):
            form[name] = "on" if field.initial is True else field.initial

    response = alice_browser.post("/jobs/new/", form)

    assert response.status_code == 302, response.context["form"].errors
    assert Job.objects.get(name="from the form").preset == "demo-base"


def test_the_trainer_list_shows_the_presets(alice_api):
    trainers = {entry["name"]: entry for entry in alice_api.get("/api/v1/trainers").json()["results"]}
    assert trainers["lora-sft"]["presets"] == {"demo-base": DEMO_PRESET}
    assert trainers["example"]["presets"] == {}
