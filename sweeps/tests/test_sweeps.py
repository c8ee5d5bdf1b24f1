"""Sweeps: trials are ordinary jobs and evaluations, started up to the concurrency limit, ranked with Holm."""

import pytest

from jobs.models import Job
from models_app.models import ModelAlias
from sweeps import selectors, services
from sweeps.models import Sweep, SweepTrial
from sweeps.planning import plan_trials

from .conftest import sweep_body

API = "/api/v1/sweeps"
RANDOM = {
    "epochs": {"min": 1, "max": 5},
    "learning_rate": {"min": 0.01, "max": 1.0, "log": True},
    "loss": ["hinge", "log_loss"],
}


def _body(dataset, **overrides):
    return sweep_body(dataset, **{"name": "grid", **overrides})


def test_a_grid_sweep_runs_every_trial_evaluates_each_and_ranks_them(
    alice_api, training_set, sweep_ollama, local_storage, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_api.post(API, _body(training_set), format="json")
    assert response.status_code == 201, response.content
    body = alice_api.get(f"{API}/{response.json()['id']}").json()
    assert body["status"] == "completed"
    assert sorted(tuple(sorted(t["hyperparameters"].items())) for t in body["trials"]) == sorted(
        tuple(sorted({"epochs": e, "learning_rate": lr}.items())) for e in (1, 2) for lr in (0.1, 0.5)
    )
    assert [t["state"] for t in body["trials"]] == ["evaluated"] * 4
    assert sorted(t["version"] for t in body["trials"]) == [1, 2, 3, 4]
    ranking = body["ranking"]
    assert ranking["correction"] == "holm" and ranking["evaluated"] == 4
    # Odd versions answer perfectly (+2/3 accuracy over the base), even ones like the base (+0).
    assert [row["version"] % 2 for row in ranking["ranking"]] == [1, 1, 0, 0]
    assert ranking["best"]["version"] % 2 == 1 and ranking["best"]["better_than_base"] is True
    assert all(row["p_holm"] >= row["p_value"] for row in ranking["ranking"])
    assert not any(row["better_than_base"] for row in ranking["ranking"][2:])
    assert Job.objects.filter(sweep_trial__sweep_id=body["id"], status="succeeded").count() == 4


def test_a_random_sweep_with_a_fixed_seed_gives_the_same_trials_twice(
    alice, alice_api, training_set, sweep_ollama, local_storage, django_capture_on_commit_callbacks
):
    body = _body(
        training_set,
        name="random",
        registered_name="random",
        strategy="random",
        search_space=RANDOM,
        n_trials=4,
        seed=7,
        concurrency=4,
    )
    with django_capture_on_commit_callbacks(execute=True):
        first = alice_api.post(API, body, format="json").json()
    assert alice_api.get(f"{API}/{first['id']}").json()["status"] == "completed"
    with django_capture_on_commit_callbacks(execute=False):
        second = alice_api.post(API, {**body, "registered_name": "random-again"}, format="json").json()
    assert [t["hyperparameters"] for t in second["trials"]] == [t["hyperparameters"] for t in first["trials"]]
    assert len({str(t["hyperparameters"]) for t in first["trials"]}) == 4
    schema = {
        "epochs": {"type": "integer", "minimum": 1, "maximum": 500},
        "learning_rate": {"type": "number"},
        "loss": {"type": "enum", "choices": ["hinge", "log_loss"]},
    }
    other_seed = plan_trials(schema=schema, strategy="random", space=RANDOM, seed=8, n_trials=4)
    assert other_seed != [t["hyperparameters"] for t in first["trials"]]


def test_no_more_trials_run_at_once_than_the_concurrency_limit(
    alice_api, training_set, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        sweep_id = alice_api.post(API, _body(training_set), format="json").json()["id"]
    with django_capture_on_commit_callbacks(execute=False):
        services.sweep_advance(sweep_id=sweep_id)
        services.sweep_advance(sweep_id=sweep_id)  # a duplicate signal starts nothing more
    trials = SweepTrial.objects.filter(sweep_id=sweep_id)
    assert trials.exclude(job=None).count() == 2
    assert Job.objects.filter(sweep_trial__sweep_id=sweep_id, status="queued").count() == 2


def test_cancelling_mid_sweep_cancels_its_jobs_and_starts_no_more(
    alice_api, training_set, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        sweep_id = alice_api.post(API, _body(training_set), format="json").json()["id"]
        services.sweep_advance(sweep_id=sweep_id)
    response = alice_api.post(f"{API}/{sweep_id}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert set(Job.objects.filter(sweep_trial__sweep_id=sweep_id).values_list("status", flat=True)) == {"cancelled"}
    services.sweep_advance(sweep_id=sweep_id)
    assert SweepTrial.objects.filter(sweep_id=sweep_id).exclude(job=None).count() == 2
    assert [t["state"] for t in response.json()["trials"]].count("cancelled") == 2
    assert alice_api.post(f"{API}/{sweep_id}/cancel").status_code == 409


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"trainer": "external"}, "trainer"),
        ({"search_space": {"colour": [1]}}, "search_space"),
        ({"search_space": {"epochs": [0]}}, "search_space"),
        ({"search_space": {"epochs": {"min": 1, "max": 3}}}, "search_space"),
        ({"strategy": "random", "search_space": {"epochs": [1]}, "n_trials": 2}, "seed"),
        ({"test_set_path": "datasets/users/999/x.jsonl"}, "test_set_path"),
        ({"concurrency": 99}, "concurrency"),
        ({"endpoint": "nowhere"}, "endpoint"),
        ({"endpoint": "http://10.0.0.1:11434"}, "endpoint"),
        ({"endpoint": "local", "evaluation_base": "llama3.2:3b"}, "evaluation_base"),
    ],
)
def test_bad_sweeps_are_400s_naming_the_field(alice_api, training_set, overrides, field):
    response = alice_api.post(API, _body(training_set, **overrides), format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()["errors"]
    assert not Sweep.objects.exists()


def test_holm_adjusts_step_down_and_keeps_the_order():
    assert selectors.holm_adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert selectors.holm_adjust([0.5]) == [0.5]
    assert selectors.holm_adjust([0.9, 0.8]) == [1.0, 1.0]


def test_promoting_the_best_goes_through_the_gate(
    alice_api, training_set, sweep_ollama, local_storage, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        sweep = alice_api.post(API, _body(training_set, name="promoted", registered_name="promoted"), format="json")
    sweep_id = sweep.json()["id"]
    strict = {"test_set_path": training_set.path, "metric": "accuracy", "threshold": 0.9}
    assert alice_api.put("/api/v1/registry/promoted/gate", strict, format="json").status_code == 200
    refused = alice_api.post(f"{API}/{sweep_id}/promote")
    assert refused.status_code == 409 and refused.json()["evidence"]["passed"] is False
    fair = {**strict, "threshold": 0.1}
    alice_api.put("/api/v1/registry/promoted/gate", fair, format="json")
    promoted = alice_api.post(f"{API}/{sweep_id}/promote")
    assert promoted.status_code == 200, promoted.content
    best = alice_api.get(f"{API}/{sweep_id}").json()["ranking"]["best"]["version"]
    assert ModelAlias.objects.get(registered_name__name="promoted", alias="champion").model.version == best


def test_bob_sees_none_of_alices_sweeps(alice_api, bob_api, training_set, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        sweep_id = alice_api.post(API, _body(training_set), format="json").json()["id"]
    assert bob_api.get(f"{API}/{sweep_id}").status_code == 404
    assert bob_api.post(f"{API}/{sweep_id}/cancel").status_code == 404
    assert bob_api.get(API).json()["results"] == []
    assert Sweep.objects.get(id=sweep_id).status == "running"


def test_the_sweep_pages_show_trials_and_the_plot(
    alice_browser, training_set, sweep_ollama, local_storage, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_browser.post(
            "/sweeps/",
            {
                "name": "grid",
                "trainer": "example",
                "dataset": training_set.id,
                "base_model": "llama3.2:3b",
                "strategy": "grid",
                "search_space": '{"epochs": [1, 2]}',
                "concurrency": "2",
                "test_set_path": training_set.path,
                "registered_name": "grid",
            },
        )
    assert response.status_code == 302, response.content[:500]
    page = alice_browser.get(response["Location"])
    assert page.content.count(b"data-trial=") == 2
    assert page.content.count(b"<circle") == 2
    assert b"grid" in alice_browser.get("/sweeps/").content


def test_a_trial_whose_worker_died_is_settled_by_its_job_and_the_sweep_carries_on_from_beat(
    alice_api, training_set, django_capture_on_commit_callbacks
):
    """The job sweeper fails a job whose runner stopped heartbeating; even if that signal is lost,
    beat's pass over running sweeps reads the jobs again and starts the next trial."""
    from jobs import services as job_services
    from sweeps.tasks import sweep_advance_running

    with django_capture_on_commit_callbacks(execute=False):
        sweep_id = alice_api.post(API, _body(training_set), format="json").json()["id"]
        services.sweep_advance(sweep_id=sweep_id)
        first = SweepTrial.objects.get(sweep_id=sweep_id, index=1).job
        job_services.job_complete(job_id=first.id, status="failed", error_message="lost its worker")
        assert sweep_advance_running() == 1
    started = SweepTrial.objects.filter(sweep_id=sweep_id).exclude(job=None).order_by("index")
    assert [trial.index for trial in started] == [1, 2, 3]
    state = {t["index"]: t["state"] for t in alice_api.get(f"{API}/{sweep_id}").json()["trials"]}
    assert state == {1: "job failed", 2: "queued", 3: "queued", 4: "waiting"}


def test_with_a_champion_each_trial_is_also_evaluated_against_it_and_promotion_needs_that_evidence(
    alice, alice_api, training_set, sweep_ollama, local_storage, django_capture_on_commit_callbacks
):
    from models_app import registry
    from models_app import services as model_services

    champion = model_services.model_create(
        owner=alice, name="promoted-v1", base_model="llama3.2:3b", registered_name="promoted"
    )
    registry.alias_move(registered_name=champion.registered_name, alias="champion", version=1, moved_by=alice)
    gate = {"test_set_path": training_set.path, "metric": "accuracy", "threshold": 0.1}
    alice_api.put("/api/v1/registry/promoted/gate", gate, format="json")
    body = _body(training_set, name="promoted", registered_name="promoted", search_space={"epochs": [1, 2]})
    with django_capture_on_commit_callbacks(execute=True):
        sweep_id = alice_api.post(API, body, format="json").json()["id"]
    trials = SweepTrial.objects.filter(sweep_id=sweep_id).select_related("champion_evaluation", "model")
    assert sorted(t.model.version for t in trials) == [2, 3]
    assert {t.champion_evaluation.base_model_name for t in trials} == {"promoted-v1"}
    assert {t.champion_evaluation.status for t in trials} == {"completed"}
    # The best trial (v3, perfect) is only as good as the perfect champion: the gate refuses, with that evidence.
    refused = alice_api.post(f"{API}/{sweep_id}/promote")
    assert refused.status_code == 409
    evidence = refused.json()["evidence"]
    assert evidence["baseline"] == "promoted-v1" and evidence["evaluation_id"] is not None and evidence["delta"] == 0
