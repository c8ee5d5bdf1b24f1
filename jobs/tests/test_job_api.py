from datetime import timedelta

import pytest
from django.utils import timezone

from jobs import services
from jobs.models import Job, Trainer

pytestmark = pytest.mark.django_db


@pytest.fixture
def dataset(alice, make_dataset):
    return make_dataset(alice)


def create(client, dataset_, **overrides):
    body = {
        "name": "run 1",
        "base_model": "llama3.2:3b",
        "dataset": dataset_.id,
        "trainer": "example",
        "hyperparameters": {"epochs": 3},
    }
    body.update(overrides)
    return client.post("/api/v1/jobs", body, format="json")


def test_it_creates_a_queued_job_and_enqueues_its_run_after_commit(
    alice_api, alice, dataset, django_capture_on_commit_callbacks, tasks_not_run
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = create(alice_api, dataset)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "queued"
    assert body["trainer"] == "example"
    assert body["hyperparameters"]["epochs"] == 3
    assert body["hyperparameters"]["learning_rate"] == 0.5  # default filled
    assert body["storage_prefix"] == f"users/{alice.id}/jobs/{body['id']}/"
    assert tasks_not_run() == []  # nothing before commit
    for callback in callbacks:
        callback()
    assert tasks_not_run() == [(services.RUN_TASK, [body["id"]], "training")]


def test_metadata_labels_a_job_and_bad_labels_are_refused(alice_api, dataset):
    labelled = create(alice_api, dataset, metadata={"team": "support"})
    unlabelled = create(alice_api, dataset)
    refused = create(alice_api, dataset, metadata={"team": ["support"]})

    assert labelled.status_code == 201 and labelled.json()["metadata"] == {"team": "support"}
    assert unlabelled.json()["metadata"] == {}
    assert refused.status_code == 400
    assert refused.json()["errors"]["metadata"] == ["the value of 'team' must be a string of at most 512 characters"]
    assert Job.objects.count() == 2


def test_it_refuses_bad_hyperparameters_with_per_field_errors(alice_api, dataset):
    response = create(alice_api, dataset, hyperparameters={"epochs": 0, "loss": "squared", "colour": "red"})
    assert response.status_code == 400
    errors = response.json()["errors"]["hyperparameters"]
    assert errors["epochs"] == ["must be at least 1"]
    assert errors["loss"][0].startswith("must be one of")
    assert errors["colour"][0].startswith("unknown hyperparameter")
    assert Job.objects.count() == 0


@pytest.mark.parametrize(("name", "value"), [("note", "before\x00after"), ("tags", ["fine", "\x00"])])
def test_it_refuses_a_nul_byte_in_a_string_hyperparameter_at_creation(alice_api, dataset, name, value):
    """Values become HP_* environment variables, which cannot hold NUL: the run used to fail later, not the POST."""
    Trainer.objects.create(
        name="notes",
        command=["python", "-c", "pass"],
        hyperparameter_schema={"note": {"type": "string", "default": ""}, "tags": {"type": "array", "default": []}},
    )
    response = create(alice_api, dataset, trainer="notes", hyperparameters={name: value})
    assert response.status_code == 400, response.content
    assert "NUL" in response.json()["errors"]["hyperparameters"][name][0]
    assert Job.objects.count() == 0


def test_it_refuses_another_users_dataset(bob_api, dataset):
    response = create(bob_api, dataset)
    assert response.status_code == 400
    assert response.json()["errors"]["dataset"] == [f"no dataset #{dataset.id} of yours"]


def test_it_refuses_unknown_disabled_and_unavailable_trainers(alice_api, dataset):
    assert create(alice_api, dataset, trainer="nope").json()["errors"]["trainer"] == ["no trainer named 'nope'"]
    Trainer.objects.create(name="off", enabled=False)
    response = create(alice_api, dataset, trainer="off", hyperparameters={})
    assert response.status_code == 400
    assert response.json()["detail"] == "trainer: trainer 'off' is unavailable: disabled by an operator"
    Trainer.objects.create(name="gpu", required_modules=["definitely_not_installed_mod"])
    response = create(alice_api, dataset, trainer="gpu", hyperparameters={})
    assert "needs Python modules not installed here: definitely_not_installed_mod" in response.json()["detail"]


def test_it_refuses_malformed_bodies_with_400(alice_api, dataset):
    assert alice_api.post("/api/v1/jobs", {"name": "x"}, format="json").status_code == 400
    response = create(alice_api, dataset, hyperparameters=[1, 2])
    assert response.status_code == 400
    response = create(alice_api, dataset, dataset="abc")
    assert response.status_code == 400


def test_others_get_404_and_anonymous_401(alice_api, bob_api, olivia_api, anon_api, alice, dataset, queued_job):
    job = queued_job(alice, dataset, "example")
    for method, url in [
        ("get", f"/api/v1/jobs/{job.id}"),
        ("post", f"/api/v1/jobs/{job.id}/cancel"),
        ("delete", f"/api/v1/jobs/{job.id}"),
        ("post", f"/api/v1/jobs/{job.id}/complete"),
    ]:
        assert getattr(bob_api, method)(url, {"status": "failed"}, format="json").status_code == 404
    assert bob_api.get("/api/v1/jobs").json()["count"] == 0
    assert anon_api.get("/api/v1/jobs").status_code == 401
    assert olivia_api.get(f"/api/v1/jobs/{job.id}/").json()["id"] == job.id
    assert Job.objects.get(id=job.id).status == "queued"


def test_it_filters_and_orders_the_list(alice_api, alice, dataset, queued_job):
    first = queued_job(alice, dataset, "example")
    second = queued_job(alice, dataset, "example")
    Job.objects.filter(id=first.id).update(base_model="other", created_at=timezone.now() - timedelta(days=2))
    services.job_cancel(job_id=second.id)
    ids = lambda response: [item["id"] for item in response.json()["results"]]  # noqa: E731
    assert ids(alice_api.get("/api/v1/jobs?status=cancelled")) == [second.id]
    assert ids(alice_api.get("/api/v1/jobs?status=cancelled&status=queued")) == [second.id, first.id]
    assert ids(alice_api.get("/api/v1/jobs?base_model=other")) == [first.id]
    since = (timezone.now() - timedelta(days=1)).isoformat()
    assert ids(alice_api.get("/api/v1/jobs", {"created_after": since})) == [second.id]
    assert ids(alice_api.get("/api/v1/jobs", {"created_before": since})) == [first.id]
    assert ids(alice_api.get("/api/v1/jobs?ordering=created_at")) == [first.id, second.id]
    assert alice_api.get("/api/v1/jobs?status=exploded").status_code == 400
    assert alice_api.get("/api/v1/jobs?created_after=yesterday").status_code == 400


def test_cancel_moves_unfinished_jobs_and_refuses_finished_ones(alice_api, alice, dataset, queued_job):
    job = queued_job(alice, dataset, "example")
    response = alice_api.post(f"/api/v1/jobs/{job.id}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert response.json()["finished_at"]
    again = alice_api.post(f"/api/v1/jobs/{job.id}/cancel")
    assert again.status_code == 409
    assert "already cancelled" in again.json()["detail"]


def test_delete_only_finished_jobs(alice_api, alice, dataset, queued_job, django_capture_on_commit_callbacks):
    from finetune_studio.objects import bucket

    job = queued_job(alice, dataset, "example")
    assert alice_api.delete(f"/api/v1/jobs/{job.id}").status_code == 409
    bucket("logs").put_bytes(job.storage_prefix + "logs/0001.log", b"line\n")
    services.job_cancel(job_id=job.id)
    with django_capture_on_commit_callbacks(execute=True):
        assert alice_api.delete(f"/api/v1/jobs/{job.id}/").status_code == 204
    assert not Job.objects.filter(id=job.id).exists()
    assert list(bucket("logs").list(job.storage_prefix)) == []


def test_an_illegal_move_is_a_conflict(alice, dataset, queued_job):
    job = queued_job(alice, dataset, "example")
    services.job_complete(job_id=job.id, status="failed", error_message="boom")
    with pytest.raises(services.JobsConflict):
        services.job_cancel(job_id=job.id)
    assert services.job_claim(job_id=job.id, lease_owner="x") is False
    assert services.job_enqueue(job_id=job.id) is False
    with pytest.raises(ValueError):
        services.job_complete(job_id=job.id, status="running")


def test_the_list_does_a_fixed_number_of_queries(alice_api, alice, dataset, queued_job, django_assert_max_num_queries):
    for _ in range(5):
        queued_job(alice, dataset, "example")
    with django_assert_max_num_queries(6):
        response = alice_api.get("/api/v1/jobs")
    assert response.json()["count"] == 5
