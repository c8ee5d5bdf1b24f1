import io
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from finetune_studio.objects import bucket
from jobs.models import Dataset, Job

from .conftest import SAMPLE_ROWS, jsonl

pytestmark = pytest.mark.django_db


def upload(client, data: bytes, filename: str = "train.jsonl", **extra):
    handle = io.BytesIO(data)
    handle.name = filename
    return client.post("/api/v1/datasets", {"file": handle, **extra}, format="multipart")


def stored_keys() -> list[str]:
    return [info.key for info in bucket("datasets").list("users/")]


def test_it_stores_a_valid_upload_with_its_summary(alice_api, alice):
    response = upload(alice_api, jsonl(SAMPLE_ROWS), name="Contracts")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["name"] == "Contracts"
    assert body["records"] == 20
    assert body["format"] == "jsonl"
    assert body["labels"] == ["governing_law", "payment_terms"]
    assert body["label_counts"] == {"governing_law": 8, "payment_terms": 12}
    assert body["size_bytes"] == len(jsonl(SAMPLE_ROWS))
    key = body["path"].removeprefix("datasets/")
    assert key.startswith(f"users/{alice.id}/datasets/") and key.endswith("/train.jsonl")
    assert bucket("datasets").read_bytes(key) == jsonl(SAMPLE_ROWS)
    import hashlib

    assert body["sha256"] == hashlib.sha256(jsonl(SAMPLE_ROWS)).hexdigest()


def test_it_accepts_csv_and_json_arrays(alice_api):
    csv_body = b'text,label\n"Pay within 30 days, net",payment_terms\nGoverned by Delaware law,governing_law\n'
    response = upload(alice_api, csv_body, "clauses.csv")
    assert response.status_code == 201, response.content
    assert response.json()["label_counts"] == {"governing_law": 1, "payment_terms": 1}
    array = json.dumps([{"text": "a", "label": "x"}, {"text": "b", "label": "y"}, {"text": "c", "label": "x"}])
    response = upload(alice_api, array.encode(), "set.json")
    assert response.status_code == 201
    assert (response.json()["format"], response.json()["records"]) == ("json", 3)


def test_it_refuses_a_bad_line_naming_it_and_stores_nothing(alice_api):
    data = jsonl(SAMPLE_ROWS[:2]) + b'{"instruction": "x", "input": "y"\n' + jsonl(SAMPLE_ROWS[2:4])
    response = upload(alice_api, data)
    assert response.status_code == 400
    assert response.json()["detail"].startswith("line 3: invalid JSON")
    assert "line 3" in response.json()["errors"]["file"][0]
    assert stored_keys() == []
    assert Dataset.objects.count() == 0


@pytest.mark.parametrize(
    ("data", "filename", "expected"),
    [
        (b'{"text": "x"}\n', "a.jsonl", "line 1: needs 'text' and 'label'"),
        (
            b'{"text": "ok", "label": "a"}\n{"instruction": "x", "input": "y", "output": ""}\n',
            "a.jsonl",
            "line 2: field 'output' is empty",
        ),
        (b"label,other\nx,y\n", "a.csv", "line 1: a CSV file needs a header row"),
        (b"\xff\xfe garbage", "a.bin", "file: not a JSON array"),
        (b"", "empty.jsonl", ""),
    ],
)
def test_it_refuses_invalid_datasets_with_the_reason(alice_api, data, filename, expected):
    response = upload(alice_api, data, filename)
    assert response.status_code == 400, response.content
    assert response.json()["detail"].startswith(expected)
    assert stored_keys() == []


def test_it_refuses_a_file_with_no_records(alice_api):
    response = upload(alice_api, b"\n\n", "blank.jsonl")
    assert response.status_code == 400
    assert response.json()["detail"] == "file: holds no records"


def test_it_refuses_an_upload_over_the_limit_with_413(alice_api, settings):
    settings.DATASET_MAX_UPLOAD_BYTES = 2048
    response = upload(alice_api, jsonl(SAMPLE_ROWS * 3))  # ~6 KB: caught while streaming
    assert response.status_code == 413
    assert "2048" in response.json()["detail"]
    assert stored_keys() == []


def test_it_refuses_by_content_length_before_reading_the_body(alice_api, settings):
    settings.DATASET_MAX_UPLOAD_BYTES = 1024
    big = jsonl(SAMPLE_ROWS * 400)  # far over limit + multipart overhead
    assert len(big) > 1024 + 64 * 1024
    response = upload(alice_api, big)
    assert response.status_code == 413
    assert stored_keys() == []


def test_others_cannot_see_or_delete_a_dataset(alice_api, bob_api, olivia_api, anon_api, alice, make_dataset):
    dataset = make_dataset(alice)
    assert bob_api.get(f"/api/v1/datasets/{dataset.id}").status_code == 404
    assert bob_api.delete(f"/api/v1/datasets/{dataset.id}").status_code == 404
    assert bob_api.get("/api/v1/datasets").json()["count"] == 0
    assert anon_api.get("/api/v1/datasets").status_code == 401
    assert olivia_api.get(f"/api/v1/datasets/{dataset.id}/").status_code == 200
    assert alice_api.get("/api/v1/datasets").json()["results"][0]["id"] == dataset.id


def test_deleting_a_dataset_removes_its_object(alice_api, alice, make_dataset, django_capture_on_commit_callbacks):
    dataset = make_dataset(alice)
    key = dataset.path.removeprefix("datasets/")
    assert bucket("datasets").exists(key)
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_api.delete(f"/api/v1/datasets/{dataset.id}")
    assert response.status_code == 204
    assert not bucket("datasets").exists(key)
    assert not Dataset.objects.filter(id=dataset.id).exists()


def test_a_storage_failure_keeps_the_dataset_and_says_why(alice_api, alice_browser, alice, make_dataset):
    dataset = make_dataset(alice)
    datasets = bucket("datasets")
    # A bucket that is gone: every delete fails with a real S3 error (NoSuchBucket).
    datasets.client.delete_object(Bucket=datasets.name, Key=dataset.path.removeprefix("datasets/"))
    datasets.client.delete_bucket(Bucket=datasets.name)
    response = alice_api.delete(f"/api/v1/datasets/{dataset.id}")
    assert response.status_code == 503
    assert "nothing was deleted" in response.json()["detail"] and "NoSuchBucket" in response.json()["detail"]
    page = alice_browser.post(f"/datasets/{dataset.id}/delete/", follow=True)
    assert page.redirect_chain[-1][0] == f"/datasets/{dataset.id}/"
    assert "nothing was deleted" in page.content.decode()
    assert Dataset.objects.filter(id=dataset.id).exists()


def test_it_refuses_to_delete_a_dataset_a_running_job_uses(alice_api, alice, make_dataset, queued_job):
    dataset = make_dataset(alice)
    job = queued_job(alice, dataset, "example")
    Job.objects.filter(id=job.id).update(status=Job.Status.RUNNING)
    response = alice_api.delete(f"/api/v1/datasets/{dataset.id}")
    assert response.status_code == 409
    assert f"#{job.id}" in response.json()["detail"]
    assert bucket("datasets").exists(dataset.path.removeprefix("datasets/"))


def test_the_upload_name_is_cleaned_into_the_key(alice, make_dataset):
    dataset = make_dataset(alice, filename="../../etc/My Clauses (v2).JSONL")
    assert dataset.path.endswith("/My-Clauses-v2.jsonl")
    assert dataset.path.startswith(f"datasets/users/{alice.id}/datasets/")


def test_label_counts_are_bounded(alice, settings):
    from jobs import services

    settings.DATASET_MAX_LABELS = 3
    rows = [{"text": f"t{i}", "label": f"l{i % 5}"} for i in range(10)]
    dataset = services.dataset_create(owner=alice, uploaded_file=SimpleUploadedFile("x.jsonl", jsonl(rows)))
    assert dataset.records == 10
    assert dataset.labels == ["l0", "l1", "l2"]
