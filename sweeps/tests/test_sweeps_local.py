"""Sweeps evaluated on the `local` endpoint: each trial is its model's own LoRA adapter on its base, no Ollama.

Here the trials' jobs are settled as a runner settles them (their adapter files in storage, ``job_complete``)
and the tests read the evaluations the sweep starts; test_sweeps_local_run trains and evaluates a grid of two
for real (about 25 s).
"""

import pytest

from evaluations.models import Evaluation
from finetune_studio.objects import bucket
from jobs import services as job_services
from models_app import registry
from models_app import services as model_services
from sweeps import services
from sweeps.models import Sweep, SweepTrial
from tests.factories import ARTIFACTS

API = "/api/v1/sweeps"


@pytest.fixture
def demo_catalogue(settings, tmp_path):
    demo = tmp_path / "demo-base"
    demo.mkdir()
    (demo / "config.json").write_text("{}")  # the catalogue's test for a model folder; nothing is loaded here
    settings.DEMO_BASE_DIR = demo
    settings.OLLAMA_URL = "http://127.0.0.1:9"  # nothing listens: every answer would have to come from local


def _body(training_set, **overrides):
    body = {
        "name": "local grid",
        "trainer": "lora-sft",
        "dataset": training_set.id,
        "base_model": "demo-base",
        "strategy": "grid",
        "search_space": {"learning_rate": [0.01, 0.02]},
        "concurrency": 2,
        "test_set_path": training_set.path,
        "endpoint": "local",
        "registered_name": "clauses",
    }
    return {**body, **overrides}


def _settle_trials(sweep_id: int) -> list[SweepTrial]:
    """What a runner does at the end of each trial: the adapter in storage, the job succeeded, its model."""
    for trial in SweepTrial.objects.filter(sweep_id=sweep_id).exclude(job=None).select_related("job"):
        for path, data in ARTIFACTS.items():
            bucket("models").put_bytes(trial.job.storage_prefix + path, data)
        job_services.job_complete(job_id=trial.job_id, status="succeeded", exit_code=0)
        model_services.model_create_from_job(job_id=trial.job_id)
    services.sweep_advance(sweep_id=sweep_id)
    return list(SweepTrial.objects.filter(sweep_id=sweep_id).select_related("evaluation", "model").order_by("index"))


def test_a_lora_sft_sweep_on_local_evaluates_each_trials_own_adapter_against_the_base(
    alice, alice_api, training_set, demo_catalogue, local_storage, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        response = alice_api.post(API, _body(training_set), format="json")
        assert response.status_code == 201, response.content
        sweep_id = response.json()["id"]
        services.sweep_advance(sweep_id=sweep_id)
        trials = _settle_trials(sweep_id)
    assert [trial.model.version for trial in trials] == [1, 2]
    for trial in trials:
        evaluation = trial.evaluation
        assert evaluation is not None, trial.error
        assert evaluation.model == trial.model and evaluation.config["task"] == "classification"
        assert evaluation.base_model_name == "demo-base" and evaluation.fine_tuned_name == trial.model.name
        # No served name (no "clauses-v1"): the registry's adapter of this trial's model, on the local engine.
        assert [(p["name"], p["role"], p["endpoint"], p["source"]) for p in evaluation.candidate_plans] == [
            ("demo-base", "base", "local", "named"),
            (trial.model.name, "fine_tuned", "local", "registry_adapter"),
        ]
    states = [t["state"] for t in alice_api.get(f"{API}/{sweep_id}").json()["trials"]]
    assert states == ["evaluating"] * 2


def test_a_generation_sweep_on_local_evaluates_each_trials_adapter_as_a_generation(
    alice_api, instruction_set, demo_catalogue, local_storage, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        response = alice_api.post(API, _body(instruction_set, registered_name="chat"), format="json")
        assert response.status_code == 201, response.content
        assert response.json()["metric"] == "token_f1"
        sweep_id = response.json()["id"]
        services.sweep_advance(sweep_id=sweep_id)
        trials = _settle_trials(sweep_id)
    for trial in trials:
        evaluation = trial.evaluation
        assert evaluation is not None, trial.error
        assert evaluation.config["task"] == "generation" and evaluation.base_model_name == "demo-base"
        assert [(p["name"], p["endpoint"], p["source"]) for p in evaluation.candidate_plans] == [
            ("demo-base", "local", "named"),
            (trial.model.name, "local", "registry_adapter"),
        ]


def test_on_local_a_champion_is_compared_through_the_gate_not_in_the_trials_evaluation(
    alice, alice_api, training_set, demo_catalogue, local_storage, django_capture_on_commit_callbacks
):
    champion = model_services.model_create(
        owner=alice, name="clauses-v1", base_model="demo-base", registered_name="clauses"
    )
    registry.alias_move(registered_name=champion.registered_name, alias="champion", version=1, moved_by=alice)
    with django_capture_on_commit_callbacks(execute=False):
        sweep_id = alice_api.post(
            API, _body(training_set, search_space={"learning_rate": [0.01]}), format="json"
        ).json()["id"]
        services.sweep_advance(sweep_id=sweep_id)
        (trial,) = _settle_trials(sweep_id)
    assert trial.champion_evaluation is None and trial.error == ""
    assert trial.evaluation.candidate_plans[0]["name"] == "demo-base"
    assert Evaluation.objects.count() == 1


def test_on_local_a_trial_without_an_adapter_says_why_it_is_not_evaluated(
    alice_api, training_set, demo_catalogue, local_storage, django_capture_on_commit_callbacks
):
    # The example trainer writes a scikit-learn classifier, no LoRA adapter: the local engine has nothing to load.
    body = _body(training_set, trainer="example", search_space={"epochs": [1]})
    with django_capture_on_commit_callbacks(execute=True):
        sweep_id = alice_api.post(API, body, format="json").json()["id"]
    trial = SweepTrial.objects.get(sweep_id=sweep_id)
    assert trial.evaluation is None and "no LoRA adapter" in trial.error
    assert not Evaluation.objects.exists()


def test_the_sweep_form_offers_the_endpoints_and_the_catalogue_and_starts_a_local_sweep_with_no_ollama(
    alice_browser, training_set, demo_catalogue, local_storage, django_capture_on_commit_callbacks
):
    page = alice_browser.get("/sweeps/").content.decode()
    # Ollama does not answer: the form suggests the local engine, and says why Ollama is unavailable.
    assert '<option value="local" selected>local (local)</option>' in page
    assert '<option value="ollama">ollama (ollama) — unavailable: ' in page
    assert '<datalist id="sweep-base-models"><option value="demo-base"></datalist>' in page
    form = {
        "name": "local from the page",
        "trainer": "lora-sft",
        "dataset": training_set.id,
        "base_model": "demo-base",
        "strategy": "grid",
        "search_space": '{"learning_rate": [0.01, 0.02]}',
        "concurrency": "2",
        "test_set_path": training_set.path,
        "endpoint": "local",
        "metric": "f1_macro",
    }
    refused = alice_browser.post("/sweeps/", {**form, "search_space": '{"learning_rate": [0.01'}).content.decode()
    # Refused: what was chosen is still chosen, nothing has to be picked again.
    assert f'<option value="{training_set.pk}" selected>' in refused
    assert f'<option value="{training_set.path}" selected>' in refused
    assert '<option value="local" selected>' in refused and "<option selected>f1_macro</option>" in refused
    with django_capture_on_commit_callbacks(execute=False):
        response = alice_browser.post("/sweeps/", form)
    assert response.status_code == 302, response.content.decode()[:500]
    sweep = Sweep.objects.get(name="local from the page")
    assert (sweep.endpoint, sweep.metric, sweep.n_trials) == ("local", "f1_macro", 2)
