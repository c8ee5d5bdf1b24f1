import pytest

from finetune_studio.objects import bucket
from models_app import services
from models_app.models import RegisteredModel
from tests.factories import make_model, make_trained_job

API = "/api/v1/models"


def keys(prefix):
    return sorted(info.key for info in bucket("models").list(prefix))


def test_deleting_removes_the_files_then_the_model(alice_api, alice):
    model = make_model(alice, files={"a.bin": b"a", "dir/b.json": b"{}"})
    other = make_model(alice, files={"keep.bin": b"k"})
    response = alice_api.delete(f"{API}/{model.id}")
    assert response.status_code == 204
    assert not RegisteredModel.objects.filter(id=model.id).exists()
    assert keys(f"users/{alice.id}/") == [f"users/{alice.id}/models/{other.id}/keep.bin"]
    assert alice_api.get(f"{API}/{model.id}").status_code == 404


def test_a_job_models_delete_takes_only_that_jobs_artifacts(alice):
    job_1 = make_trained_job(alice, artifacts={"a.bin": b"1"})
    jobs = [make_trained_job(alice, artifacts={"a.bin": b"x"}) for _ in range(10)]
    model = services.model_create_from_job(job_id=job_1.id)
    assert services.model_delete(model_id=model.id) == 1
    # users/<id>/jobs/1/ must not match users/<id>/jobs/10/…
    assert keys(f"users/{alice.id}/jobs/") == sorted(f"{job.storage_prefix}a.bin" for job in jobs)


def test_a_model_without_a_proper_prefix_deletes_only_its_listed_files(alice):
    model = make_model(alice, files={"a.bin": b"a"})
    bucket("models").put_bytes(f"users/{alice.id}/unrelated.bin", b"u")
    RegisteredModel.objects.filter(id=model.id).update(storage_path="")
    # An empty prefix must never become "delete everything": only manifest keys (now at the root) are touched.
    services.model_delete(model_id=model.id)
    assert f"users/{alice.id}/unrelated.bin" in keys("users/")
    assert not RegisteredModel.objects.filter(id=model.id).exists()


def test_a_storage_failure_keeps_the_model_and_says_why(alice_api, alice):
    model = make_model(alice)
    models_bucket = bucket("models")
    models_bucket.client.delete_bucket(Bucket=models_bucket.name)
    response = alice_api.delete(f"{API}/{model.id}")
    assert response.status_code == 503
    assert "nothing was deleted" in response.json()["detail"] and "NoSuchBucket" in response.json()["detail"]
    assert RegisteredModel.objects.filter(id=model.id).exists()


def test_the_delete_page_reports_a_storage_failure_and_keeps_the_model(alice_browser, alice):
    model = make_model(alice)
    models_bucket = bucket("models")
    models_bucket.client.delete_bucket(Bucket=models_bucket.name)
    response = alice_browser.post(f"/models/{model.id}/delete/", follow=True)
    assert response.redirect_chain[-1][0] == f"/models/{model.id}/"
    assert "nothing was deleted" in response.content.decode()
    assert RegisteredModel.objects.filter(id=model.id).exists()


@pytest.mark.parametrize("method", ["get", "post"])
def test_bob_cannot_reach_the_delete_page(client, bob, alice, method):
    model = make_model(alice)
    client.force_login(bob)
    assert getattr(client, method)(f"/models/{model.id}/delete/").status_code == 404
    assert RegisteredModel.objects.filter(id=model.id).exists()
