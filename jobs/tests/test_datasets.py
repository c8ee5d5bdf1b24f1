import io
import json
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from finetune_studio.objects import bucket
from jobs.models import Dataset, Job
from tests.factories import tool_call_records

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
    assert (body["file_format"], body["format"], body["task"]) == ("jsonl", "alpaca", "generation")
    # Alpaca outputs are answers to learn, not classes: no labels are made up from them.
    assert (body["labels"], body["label_counts"]) == ([], {})
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
    assert (response.json()["format"], response.json()["task"]) == ("text_label", "classification")
    array = json.dumps([{"text": "a", "label": "x"}, {"text": "b", "label": "y"}, {"text": "c", "label": "x"}])
    response = upload(alice_api, array.encode(), "set.json")
    assert response.status_code == 201
    assert (response.json()["file_format"], response.json()["records"]) == ("json", 3)
    assert response.json()["labels"] == ["x", "y"]


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
        (b'{"text": "x"}\n', "a.jsonl", "line 1: needs 'messages' (OpenAI chat)"),
        (
            b'{"instruction": "z", "input": "w", "output": "v"}\n{"instruction": "x", "input": "y", "output": ""}\n',
            "a.jsonl",
            "line 2: field 'output' is empty",
        ),
        (
            b'{"text": "ok", "label": "a"}\n{"prompt": "x", "completion": "y"}\n',
            "a.jsonl",
            "line 2: this record is prompt/completion, but line 1 is text/label: mixed formats",
        ),
        (
            b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x", "weight": 3}]}',
            "a.jsonl",
            "line 1: message 2 (assistant): weight must be 0 or 1",
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


CHAT_ROWS = [
    {
        "messages": [
            {"role": "system", "content": "You answer in one word."},
            {"role": "user", "content": f"Say the number {i}."},
            {"role": "assistant", "content": str(i)},
        ]
    }
    for i in range(10)
]


def test_an_openai_chat_file_is_a_generation_dataset_with_no_labels(alice_api):
    response = upload(alice_api, jsonl(CHAT_ROWS), "chat.jsonl")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["format"], body["task"], body["records"], body["labels"]) == ("openai_chat", "generation", 10, [])
    assert (body["tools"], body["tool_call_answers"]) == ([], 0)
    assert alice_api.get(f"/api/v1/datasets/{body['id']}").json()["format"] == "openai_chat"


SAMPLE_TOOLS = Path(__file__).resolve().parents[2] / "samples" / "tools"


def test_a_tool_calling_file_records_its_functions_and_how_many_records_a_call_answers(alice_api):
    """The sample: its test set stops at the call in 50 of 60 records; its training records answer in text."""
    response = upload(alice_api, (SAMPLE_TOOLS / "test.jsonl").read_bytes(), "test.jsonl")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["format"], body["task"], body["records"]) == ("openai_chat", "generation", 60)
    assert body["tools"] == ["convert_currency", "get_weather", "set_timer"]
    assert body["tool_call_answers"] == 50
    shown = alice_api.get(f"/api/v1/datasets/{body['id']}").json()
    assert (shown["tools"], shown["tool_call_answers"]) == (body["tools"], 50)
    listed = alice_api.get("/api/v1/datasets").json()["results"]
    assert [(row["tools"], row["tool_call_answers"]) for row in listed] == [(body["tools"], 50)]
    train = upload(alice_api, (SAMPLE_TOOLS / "train.jsonl").read_bytes(), "train.jsonl").json()
    assert (train["records"], train["tools"], train["tool_call_answers"]) == (240, body["tools"], 0)


def test_a_split_of_a_tool_calling_dataset_counts_each_sides_call_answers(alice_api):
    original = upload(alice_api, jsonl(tool_call_records(calls=8, texts=2)), "tools.jsonl").json()
    response = alice_api.post(f"/api/v1/datasets/{original['id']}/split", {"test_fraction": 0.5}, format="json")
    assert response.status_code == 201, response.content
    train, test = response.json()["train"], response.json()["test"]
    assert train["tools"] == test["tools"] == ["get_weather", "set_timer"]
    assert train["tool_call_answers"] + test["tool_call_answers"] == 8


def read_split(dataset) -> list[dict]:
    data = bucket("datasets").read_bytes(dataset.path.removeprefix("datasets/"))
    return [json.loads(line) for line in data.decode().splitlines()]


def test_a_seeded_split_makes_two_datasets_stratified_by_label(alice_api, alice):
    rows = [{"text": f"clause {i}", "label": "pay" if i < 30 else "law"} for i in range(40)]
    original = upload(alice_api, jsonl(rows), "clauses.jsonl").json()
    response = alice_api.post(
        f"/api/v1/datasets/{original['id']}/split", {"test_fraction": 0.25, "seed": 3}, format="json"
    )
    assert response.status_code == 201, response.content
    train, test = response.json()["train"], response.json()["test"]
    assert (train["records"], test["records"]) == (30, 10)
    # Each label keeps its share on both sides: 30 pay / 10 law → test 7.5 → 8 pay and 2.5 → 2 law (rounded).
    assert test["label_counts"] == {"law": 2, "pay": 8}
    assert train["label_counts"] == {"law": 8, "pay": 22}
    assert set(Dataset.objects.filter(id__in=[train["id"], test["id"]]).values_list("owner", flat=True)) == {alice.id}
    train_rows, test_rows = (
        read_split(Dataset.objects.get(id=train["id"])),
        read_split(Dataset.objects.get(id=test["id"])),
    )
    assert sorted(map(json.dumps, train_rows + test_rows)) == sorted(map(json.dumps, rows))
    assert Dataset.objects.count() == 3  # the original is kept
    # Same seed, same split; another seed, another one.
    again = alice_api.post(
        f"/api/v1/datasets/{original['id']}/split", {"test_fraction": 0.25, "seed": 3}, format="json"
    )
    assert read_split(Dataset.objects.get(id=again.json()["test"]["id"])) == test_rows
    other = alice_api.post(
        f"/api/v1/datasets/{original['id']}/split", {"test_fraction": 0.25, "seed": 4}, format="json"
    )
    assert read_split(Dataset.objects.get(id=other.json()["test"]["id"])) != test_rows


def test_a_chat_dataset_splits_without_strata_and_keeps_its_format(alice_api):
    original = upload(alice_api, jsonl(CHAT_ROWS), "chat.jsonl").json()
    response = alice_api.post(f"/api/v1/datasets/{original['id']}/split", {"test_fraction": 0.2}, format="json")
    assert response.status_code == 201, response.content
    train, test = response.json()["train"], response.json()["test"]
    assert (train["records"], test["records"]) == (8, 2)
    assert {train["format"], test["format"]} == {"openai_chat"}
    assert train["name"].endswith("(train, seed 42)") and test["path"].endswith("/chat-test.jsonl")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"test_fraction": 0}, "test_fraction"),
        ({"test_fraction": 0.95}, "test_fraction"),
        ({"test_fraction": "half"}, "test_fraction"),
        ({"test_fraction": None}, "test_fraction"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**40}, "seed"),
        ({"seed": "x"}, "seed"),
    ],
)
def test_a_bad_split_request_is_a_400_naming_the_field_and_creates_nothing(alice_api, alice, make_dataset, body, field):
    dataset = make_dataset(alice)
    response = alice_api.post(f"/api/v1/datasets/{dataset.id}/split", body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()["errors"]
    assert Dataset.objects.count() == 1


def test_a_one_record_dataset_cannot_be_split(alice_api, alice, make_dataset):
    dataset = make_dataset(alice, rows=[{"text": "only", "label": "one"}])
    response = alice_api.post(f"/api/v1/datasets/{dataset.id}/split", {}, format="json")
    assert response.status_code == 400
    assert "fewer than two records" in response.json()["detail"]
    assert Dataset.objects.count() == 1


def test_nobody_else_can_split_a_dataset(alice, bob_api, anon_api, make_dataset):
    dataset = make_dataset(alice)
    assert bob_api.post(f"/api/v1/datasets/{dataset.id}/split", {}, format="json").status_code == 404
    assert anon_api.post(f"/api/v1/datasets/{dataset.id}/split", {}, format="json").status_code == 401
    assert Dataset.objects.count() == 1


def test_datasets_uploaded_before_formats_were_detected_are_read_again(alice, make_dataset):
    from django.core.management import call_command

    dataset = make_dataset(alice, rows=CHAT_ROWS)
    old = make_dataset(alice, rows=[{"text": "a", "label": "x"}, {"text": "b", "label": "y"}])
    # As the migration leaves rows uploaded before: no record format, read as classification.
    Dataset.objects.filter(id__in=[dataset.id, old.id]).update(format="", task="classification", labels=["0", "1"])
    out = io.StringIO()
    call_command("dataset_detect_formats", stdout=out)
    dataset.refresh_from_db()
    old.refresh_from_db()
    assert (dataset.format, dataset.task, dataset.labels) == ("openai_chat", "generation", [])
    assert (old.format, old.task, old.labels) == ("text_label", "classification", ["x", "y"])
    assert "2 dataset(s) detected, 0 refused." in out.getvalue()


def test_chat_datasets_uploaded_before_tools_were_counted_are_read_again(alice, make_dataset):
    from django.core.management import call_command

    tools = make_dataset(alice, rows=tool_call_records(calls=3, texts=2))
    plain = make_dataset(alice, rows=CHAT_ROWS)
    labelled = make_dataset(alice, rows=[{"text": "a", "label": "x"}, {"text": "b", "label": "y"}])
    # As the migration leaves chat rows uploaded before: a format, but no tools and no call answers.
    Dataset.objects.filter(id=tools.id).update(tools=[], tool_call_answers=0)
    out = io.StringIO()
    call_command("dataset_detect_formats", stdout=out)
    tools.refresh_from_db()
    assert (tools.tools, tools.tool_call_answers) == (["get_weather", "set_timer"], 3)
    assert f"dataset #{tools.id}: OpenAI chat (generation, tools: get_weather, set_timer)" in out.getvalue()
    # Only chat sets may hold tools: labelled ones, detected already, are not read again.
    assert f"dataset #{labelled.id}" not in out.getvalue()
    assert "2 dataset(s) detected, 0 refused." in out.getvalue()
    # Idempotent: the next run changes nothing (a chat set with no tools is read again, to the same result).
    again = io.StringIO()
    call_command("dataset_detect_formats", stdout=again)
    assert "1 dataset(s) detected, 0 refused." in again.getvalue() and f"dataset #{plain.id}" in again.getvalue()
    tools.refresh_from_db()
    plain.refresh_from_db()
    assert (tools.tools, tools.tool_call_answers, plain.tools, plain.tool_call_answers) == (
        ["get_weather", "set_timer"],
        3,
        [],
        0,
    )


def test_the_list_filters_by_task_and_format(alice_api, alice, make_dataset):
    chat = make_dataset(alice, rows=CHAT_ROWS)
    labelled = make_dataset(alice, rows=[{"text": "a", "label": "x"}, {"text": "b", "label": "y"}])
    alpaca = make_dataset(alice)

    def ids(**query):
        response = alice_api.get("/api/v1/datasets", query)
        assert response.status_code == 200, response.content
        return {row["id"] for row in response.json()["results"]}

    assert ids(task="classification") == {labelled.id}
    assert ids(task="generation") == {chat.id, alpaca.id}
    assert ids(record_format=["openai_chat", "alpaca"]) == {chat.id, alpaca.id}
    assert alice_api.get("/api/v1/datasets", {"task": "poetry"}).status_code == 400


def test_a_csv_dataset_splits_into_json_lines_of_its_records(alice, make_dataset):
    from jobs import services

    rows = "".join(f"clause {i},{['pay', 'law'][i % 2]}\n" for i in range(10))
    original = services.dataset_create(
        owner=alice, uploaded_file=SimpleUploadedFile("clauses.csv", ("text,label\n" + rows).encode())
    )
    train, test = services.dataset_split(dataset_id=original.id, test_fraction=0.2, seed=0)
    assert (train.file_format, train.format, train.records, test.records) == ("jsonl", "text_label", 8, 2)
    assert test.label_counts == {"law": 1, "pay": 1}
    assert {row["label"] for row in read_split(test)} == {"law", "pay"}
