"""Hostile paths, keys, names and filters: a 400 with a reason, and not one storage call."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evaluations.models import Evaluation
from finetune_studio import keys
from jobs.models import Dataset, Job, Trainer
from models_app.models import RegisteredModel

pytestmark = pytest.mark.django_db

# One entry per trick; each must be refused wherever a user names a path or key.
HOSTILE_PATHS = {
    "dot-dot slash": "../../etc/passwd",
    "dot-dot inside": "lora_adapters/../../../users/2/secret",
    "backslash dot-dot": "..\\..\\windows\\win.ini",
    "percent-encoded dot-dot": "%2e%2e%2fsecret",
    "double-encoded dot-dot": "%252e%252e%252fsecret",
    "semicolon": "weights;rm -rf",
    "hash": "weights#fragment",
    "question mark": "weights?versionId=1",
    "leading slash": "/users/2/models/1/secret",
    "NUL byte": "weights\x00.bin",
    "very long": "a" * 5000,
    "only dots": "..",
    "empty segment": "lora_adapters//x",
    "control character": "weights\x1b[31m",
}


def test_it_refuses_hostile_model_file_paths_before_any_storage_call(world, alice_api, storage_spy):
    answers = {}
    for trick, path in HOSTILE_PATHS.items():
        upload = SimpleUploadedFile("file.bin", b"bytes", content_type="application/octet-stream")
        response = alice_api.post(
            f"/api/v1/models/{world.model.id}/files", {"path": path, "file": upload}, format="multipart"
        )
        answers[trick] = (response.status_code, bool(response.json().get("detail")))
    assert answers == dict.fromkeys(HOSTILE_PATHS, (400, True))
    assert storage_spy.connections == 0
    assert len(RegisteredModel.objects.get(id=world.model.id).files) == len(world.model.files)


def test_it_refuses_hostile_base_models_before_anything_is_queued(world, alice_api, settings):
    from jobs.models import Job

    tricks = {
        **HOSTILE_PATHS,
        "system folder": "/etc",
        "temporary folder": "/tmp",
        "the root": "/",
        "home shorthand": "~/models",
        "the studio's var": str(settings.VAR_DIR),
        "the storage root": str(settings.LOCAL_STORAGE_ROOT),
        "file URL": "file:///etc/passwd",
        "unknown name": "meta-llama/not-cached-here",
    }
    jobs_before = Job.objects.count()
    answers = {}
    for trick, base_model in tricks.items():
        response = alice_api.post(
            "/api/v1/jobs",
            {"name": "x", "base_model": base_model, "dataset": world.dataset.id, "trainer": "lora-sft"},
            format="json",
        )
        answers[trick] = (response.status_code, "base_model" in response.json().get("errors", {}))
    assert answers == dict.fromkeys(tricks, (400, True))
    assert Job.objects.count() == jobs_before


def test_it_refuses_a_model_file_path_that_is_not_utf8(world, alice_api, storage_spy):
    boundary = "XyZ"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="path"\r\n\r\n'.encode()
        + b"w\xff\xfeights.bin\r\n"
        + f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="f.bin"\r\n'.encode()
        + b"Content-Type: application/octet-stream\r\n\r\nbytes\r\n"
        + f"--{boundary}--\r\n".encode()
    )
    response = alice_api.generic(
        "POST",
        f"/api/v1/models/{world.model.id}/files",
        body,
        content_type=f"multipart/form-data; boundary={boundary}",
    )
    assert response.status_code == 400, response.content[:300]
    assert response.json()["detail"]
    assert storage_spy.connections == 0


def test_it_refuses_hostile_test_set_paths_before_any_storage_call(world, bob, alice_api, storage_spy):
    tricks = {**HOSTILE_PATHS, "another user's prefix": f"datasets/users/{bob.id}/datasets/x/test.jsonl"}
    answers = {}
    for trick, path in tricks.items():
        response = alice_api.post(
            f"/api/v1/models/{world.model.id}/evaluate",
            {"test_set_path": path, "base_model_name": "tiny"},
            format="json",
        )
        body = response.json()
        answers[trick] = (response.status_code, bool(body.get("detail")), "test_set_path" in body.get("errors", {}))
    assert answers == dict.fromkeys(tricks, (400, True, True))
    assert storage_spy.connections == 0


def test_one_model_named_many_ways_is_asked_once_and_never_as_its_own_base(world, alice_api):
    # Ten spellings of one model would have made ten candidates (ten times the requests to Ollama).
    url = f"/api/v1/models/{world.model.id}/evaluate"
    body = {"test_set_path": world.dataset.path, "base_model_name": "tiny"}
    spellings = ["probe", "probe:latest", " probe ", "probe:latest "] * 2 + ["probe", "probe:latest"]
    response = alice_api.post(url, {**body, "fine_tuned_name": "probe", "fine_tuned_names": spellings}, format="json")
    assert response.status_code == 202, response.content
    evaluation = Evaluation.objects.get(id=response.json()["evaluation_id"])
    assert evaluation.candidates == ["tiny", "probe"]
    # The base under another spelling is still the base: a model is not compared with itself.
    refused = alice_api.post(url, {**body, "fine_tuned_names": ["probe", "tiny:latest"]}, format="json")
    assert refused.status_code == 400
    assert "'tiny:latest' is the base model" in refused.json()["errors"]["fine_tuned_names"][0]
    assert Evaluation.objects.filter(owner=world.owner).count() == 3  # the world's two and the first one


def test_dataset_upload_names_never_leave_the_owner_prefix(alice, alice_api):
    """Browsers send only a base name, so a hostile one is either refused or reduced to a safe segment."""
    rows = b'{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n'
    for trick, name in HOSTILE_PATHS.items():
        upload = SimpleUploadedFile(name + ".jsonl", rows, content_type="application/json")
        response = alice_api.post("/api/v1/datasets/", {"file": upload, "name": "hostile"}, format="multipart")
        assert response.status_code in (201, 400), (trick, response.content[:300])
        if response.status_code == 400:
            assert response.json()["detail"], trick
            continue
        key = Dataset.objects.get(id=response.json()["id"]).path.removeprefix("datasets/")
        assert keys.key_is_under(key, keys.user_prefix(alice.id)), (trick, key)


HOSTILE_FILTERS = [
    ("/api/v1/models/", "ordering", "../../etc/passwd"),
    ("/api/v1/models/", "status", "ready;drop table"),
    ("/api/v1/models/", "date_from", "%2e%2e%2f"),
    ("/api/v1/models/", "job", "1 or 1=1"),
    ("/api/v1/models/", "page_size", "-1"),
    ("/api/v1/jobs/", "status", "../running"),
    ("/api/v1/jobs/", "created_after", "yesterday\x00"),
    ("/api/v1/evaluations/", "status", "done#"),
    ("/api/v1/evaluations/", "model", "1?x"),
    ("/api/v1/jobs/{job}/logs", "after", "-1"),
    ("/api/v1/jobs/{job}/logs", "since", "..\\..\\"),
    ("/api/v1/jobs/{job}/logs", "level", "INFO;DEBUG"),
    ("/api/v1/jobs/{job}/logs", "limit", "9" * 40),
]


def test_it_refuses_hostile_filter_values_with_a_reason(world, alice_api):
    answers = {}
    for path, name, value in HOSTILE_FILTERS:
        url = path.format(job=world.running_job.id)
        response = alice_api.get(url, {name: value, **({"format": "json"} if "/logs" in url else {})})
        answers[(path, name)] = (response.status_code, bool(response.json().get("detail")))
    assert answers == {(path, name): (400, True) for path, name, _ in HOSTILE_FILTERS}


LIST_ENDPOINTS = ["/api/v1/jobs/", "/api/v1/evaluations/", "/api/v1/models/", "/api/v1/datasets/"]
BAD_LIST_PARAMETERS = {
    "page_size": ["-1", "0", "ten", "1.5"],
    "page": ["-1", "0", "abc"],
    "ordering": ["owner__password", "-owner__password", "password", ",", "name,owner__email"],
}


@pytest.mark.parametrize("path", LIST_ENDPOINTS)
def test_every_list_refuses_bad_paging_and_ordering_with_a_400_naming_the_parameter(world, alice_api, path):
    answers = {}
    for name, values in BAD_LIST_PARAMETERS.items():
        for value in values:
            response = alice_api.get(path, {name: value})
            body = response.json()
            answers[(name, value)] = (response.status_code, name in body.get("errors", {}), bool(body.get("detail")))
    expected = {(name, value): (400, True, True) for name, values in BAD_LIST_PARAMETERS.items() for value in values}
    assert answers == expected


@pytest.mark.parametrize("path", LIST_ENDPOINTS)
def test_every_list_still_accepts_good_paging_and_ordering(world, alice_api, path):
    for query in ({"page_size": "1"}, {"page": "1"}, {"page_size": "500"}, {"ordering": "-created_at"}):
        response = alice_api.get(path, query)
        assert response.status_code == 200, (query, response.content[:300])


FREE_TEXT = ["\x00", "%00", "'; select pg_sleep(10); --", "\\", "%", "_", "é" * 3000]


@pytest.mark.parametrize(("path", "name"), [("/api/v1/models/", "search"), ("/api/v1/jobs/{job}/logs", "q")])
def test_free_text_search_never_fails_on_hostile_text(world, alice_api, path, name):
    url = path.format(job=world.running_job.id)
    for value in FREE_TEXT:
        response = alice_api.get(url, {name: value, **({"format": "json"} if "/logs" in url else {})})
        assert response.status_code in (200, 400), (value[:20], response.content[:300])
        if response.status_code == 400:
            assert response.json()["detail"]


def test_query_strings_that_are_not_utf8_never_fail(world, alice_api):
    for query in ["search=%FF%FE", "status=%C0%AF", "ordering=%ED%A0%80", "date_from=%00", "page=%FF"]:
        response = alice_api.get(f"/api/v1/models/?{query}")
        assert response.status_code in (200, 400), (query, response.content[:300])


HOSTILE_URLS = [
    "/api/v1/models/..%2f1",
    "/api/v1/models/%2e%2e",
    "/api/v1/models/1%00",
    "/api/v1/jobs/-1",
    "/api/v1/evaluations/1;1",
    "/api/v1/datasets/" + "9" * 40,
    "/api/v1/jobs/" + "9" * 40 + "/logs?format=json",
]


def test_hostile_ids_in_urls_are_a_404_not_a_crash(world, alice_api):
    assert {url: alice_api.get(url).status_code for url in HOSTILE_URLS} == dict.fromkeys(HOSTILE_URLS, 404)


# --- bodies -------------------------------------------------------------------------------------


MALFORMED_JSON = {
    "truncated": b"{",
    "syntax error": b'{"name": }',
    "not UTF-8": b"\xff\xfe{}",
    "deeply nested": b"[" * 100_000 + b"]" * 100_000,
    "trailing garbage": b'{"a": "\\ud800"}x',
    # Valid JSON, but text no UTF-8 store can hold: once a 500 from PostgreSQL.
    "lone surrogate": b'["ok", {"name": "a\\ud800b", "message": "a\\ud800b"}]',
    "lone low surrogate in a key": b'{"\\udfff": 1}',
}
JSON_WRITES = [
    "/api/v1/jobs/",
    "/api/v1/models/",
    "/api/v1/models/{model}/evaluate",
    "/api/v1/models/{model}/parity",
    "/api/v1/jobs/{job}/logs",
]


@pytest.mark.parametrize("path", JSON_WRITES)
def test_it_answers_400_to_malformed_json(world, alice_api, path):
    url = path.format(model=world.model.id, job=world.running_job.id)
    answers = {}
    for name, body in MALFORMED_JSON.items():
        response = alice_api.generic("POST", url, body, content_type="application/json")
        answers[name] = (response.status_code, bool(response.json().get("detail")))
    assert answers == dict.fromkeys(MALFORMED_JSON, (400, True))


def test_it_answers_413_to_request_bodies_over_the_limit(world, alice_api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024
    body = json.dumps({"name": "x" * 100_000, "base_model": "tiny"}).encode()
    response = alice_api.generic("POST", "/api/v1/models/", body, content_type="application/json")
    assert response.status_code == 413
    assert response.json()["detail"]


def test_it_answers_413_to_log_batches_over_the_limit(world, alice_api, settings):
    settings.LOG_INGEST_MAX_LINES = 10
    response = alice_api.post(f"/api/v1/jobs/{world.running_job.id}/logs", [f"line {i}" for i in range(11)])
    assert response.status_code == 413


def test_it_answers_413_to_dataset_uploads_over_the_limit(alice_api, settings, storage_spy):
    settings.DATASET_MAX_UPLOAD_BYTES = 4096
    upload = SimpleUploadedFile("big.jsonl", b'{"text": "a", "label": "x"}\n' * 1000)
    response = alice_api.post("/api/v1/datasets/", {"file": upload}, format="multipart")
    assert response.status_code == 413
    assert response.json()["detail"]
    assert not Dataset.objects.exists()


def test_it_answers_413_to_model_files_over_the_limit(world, alice_api, settings):
    settings.MODEL_FILE_MAX_UPLOAD_BYTES = 4096
    upload = SimpleUploadedFile("big.bin", b"\x00" * 20_000)
    response = alice_api.post(
        f"/api/v1/models/{world.model.id}/files", {"path": "big.bin", "file": upload}, format="multipart"
    )
    assert response.status_code == 413
    model = RegisteredModel.objects.get(id=world.model.id)
    assert "big.bin" not in {entry["path"] for entry in model.files}


# --- the keys the server builds -----------------------------------------------------------------

segment = st.text(min_size=0, max_size=40)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(owner=st.integers(min_value=1, max_value=10**9), parts=st.lists(segment, min_size=1, max_size=4))
def test_every_key_built_from_user_input_stays_under_the_owner_prefix(owner, parts):
    try:
        key = keys.user_key(owner, *parts)
    except keys.InvalidName:
        return
    assert keys.key_is_under(key, keys.user_prefix(owner))
    assert ".." not in key.split("/")
    assert "\\" not in key and "\x00" not in key


@settings(max_examples=150, deadline=None)
@given(path=st.text(max_size=60))
def test_a_model_file_key_is_always_inside_the_model_prefix(path):
    model = RegisteredModel(id=7, owner_id=3, storage_path="users/3/models/7/")
    try:
        clean = keys.clean_relative_path(path)
    except keys.InvalidName:
        return
    key = model.file_key(clean)
    assert keys.key_is_under(key, "users/3/models/7/")


@settings(max_examples=150, deadline=None)
@given(filename=st.text(max_size=80))
def test_dataset_object_names_are_one_safe_segment(filename):
    from jobs.services import _storage_filename

    try:
        name = _storage_filename(filename)
    except keys.InvalidName:
        return
    assert keys.key_is_under("users/1/datasets/" + name, "users/1/datasets/")


@settings(max_examples=100, deadline=None)
@given(path=st.text(max_size=60), owner=st.integers(min_value=1, max_value=10**6))
def test_test_set_paths_resolve_only_under_the_owner_prefix(path, owner):
    from django.contrib.auth.models import User

    from evaluations.services import EvaluationsInvalid, test_set_resolve

    user = User(id=owner, username="u")
    try:
        resolved = test_set_resolve(user=user, path="datasets/users/" + path)
    except EvaluationsInvalid:
        return
    assert keys.key_is_under(resolved.key, keys.user_prefix(owner))


# --- bombs --------------------------------------------------------------------------------------

BOMB_BYTES = 24 * 1024 * 1024


def _write_bomb(path, kind: str) -> None:
    with open(path, "wb") as out:
        if kind == "one huge JSON line":
            out.write(b'{"text": "')
            for _ in range(BOMB_BYTES // (1 << 20)):
                out.write(b"a" * (1 << 20))
        elif kind == "deeply nested JSON line":
            out.write(b'{"text": "x", "label": ' + b"[" * 500_000 + b"]" * 500_000 + b"}\n")
        elif kind == "one huge CSV field":
            out.write(b'text,label\n"')
            for _ in range(BOMB_BYTES // (1 << 20)):
                out.write(b"b" * (1 << 20))
        elif kind == "JSON array of deep objects":
            out.write(b"[" + b'{"a":' * 200_000 + b"1" + b"}" * 200_000 + b"]")


@pytest.mark.parametrize(
    ("kind", "filename"),
    [
        ("one huge JSON line", "bomb.jsonl"),
        ("deeply nested JSON line", "bomb.jsonl"),
        ("one huge CSV field", "bomb.csv"),
        ("JSON array of deep objects", "bomb.json"),
    ],
)
def test_it_rejects_dataset_bombs_within_bounded_memory(alice, tmp_path, storage_spy, kind, filename):
    import tracemalloc

    from django.core.files.uploadedfile import TemporaryUploadedFile

    from jobs.services import DatasetInvalid, dataset_create

    upload = TemporaryUploadedFile(filename, "application/octet-stream", 0, None)
    _write_bomb(upload.temporary_file_path(), kind)
    upload.size = upload.file.seek(0, 2)
    upload.file.seek(0)
    tracemalloc.start()
    try:
        with pytest.raises(DatasetInvalid) as refused:
            dataset_create(owner=alice, uploaded_file=upload)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        upload.close()
    assert refused.value.reason
    # The file is 1-24 MiB; the parser holds at most about one line (1 MiB) and a chunk at a time.
    assert peak < 8 * 1024 * 1024, f"{kind}: peak {peak / 2**20:.1f} MiB"
    assert storage_spy.connections == 0
    assert not Dataset.objects.exists()


def test_date_filters_with_offsets_postgresql_refuses_are_answered_not_crashed(world, alice_api):
    """Python accepts offsets up to ±23:59, PostgreSQL only ±15:59: found by schemathesis (a 500)."""
    odd = "0041-11-16T06:59:32.8+20:56"
    queries = [
        ("/api/v1/jobs/", {"created_after": odd}),
        ("/api/v1/jobs/", {"created_before": "0001-01-01T00:00:00+23:00"}),
        ("/api/v1/models/", {"date_from": odd}),
        ("/api/v1/models/", {"date_to": "0001-01-01T00:00:00+23:00"}),
        (f"/api/v1/jobs/{world.running_job.id}/logs", {"format": "json", "since": odd}),
        (f"/api/v1/jobs/{world.running_job.id}/logs", {"format": "json", "until": "0001-01-01T00:00:00+23:00"}),
    ]
    answers = {f"{path} {params}": alice_api.get(path, params).status_code for path, params in queries}
    assert all(status in (200, 400) for status in answers.values()), answers


# --- record formats, the dataset page's preview, the split ----------------------------------------
HOSTILE_CHAT_RECORDS = {
    "role is an object": {"messages": [{"role": {"$ne": 1}, "content": "x"}, {"role": "assistant", "content": "y"}]},
    "role is huge": {"messages": [{"role": "r" * 100_000, "content": "x"}, {"role": "assistant", "content": "y"}]},
    "content is a number": {"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "y"}]},
    "content part without a type": {
        "messages": [{"role": "user", "content": [{}]}, {"role": "assistant", "content": "y"}]
    },
    "content part of a huge type": {
        "messages": [{"role": "user", "content": [{"type": "t" * 100_000}]}, {"role": "assistant", "content": "y"}]
    },
    "weight NaN": {
        "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "weight": "NaN"}]
    },
    "weight a list": {
        "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "weight": [1]}]
    },
    "messages an object": {"messages": {"role": "user"}},
    "conversations a string": {"conversations": "human: hi"},
    "from is null": {"conversations": [{"from": None, "value": "x"}]},
    "tool calls": {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": "rm -rf /"}]},
}


@pytest.mark.parametrize("name", HOSTILE_CHAT_RECORDS)
def test_hostile_chat_records_are_a_400_naming_the_line_and_store_nothing(alice_api, storage_spy, name):
    data = json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}).encode()
    upload = SimpleUploadedFile("chat.jsonl", data + b"\n" + json.dumps(HOSTILE_CHAT_RECORDS[name]).encode() + b"\n")
    response = alice_api.post("/api/v1/datasets/", {"file": upload}, format="multipart")
    assert response.status_code == 400, response.content[:300]
    assert response.json()["detail"].startswith("line 2")
    assert len(response.json()["detail"]) < 400  # hostile values are cut, never echoed whole
    assert storage_spy.connections == 0
    assert not Dataset.objects.exists()


HOSTILE_SPLITS = {
    "NaN": {"test_fraction": "NaN"},
    "infinity": {"test_fraction": "Infinity"},
    "negative": {"test_fraction": -0.5},
    "whole": {"test_fraction": 1},
    "a list": {"test_fraction": [0.5]},
    "an object": {"test_fraction": {"$gt": 0}},
    "true": {"test_fraction": True},
    "huge seed": {"seed": 10**30},
    "float seed": {"seed": 1.5},
    "string seed": {"seed": "1; DROP TABLE"},
}


@pytest.mark.parametrize("name", HOSTILE_SPLITS)
def test_hostile_split_requests_are_a_400_and_create_nothing(world, alice_api, name):
    before = Dataset.objects.count()
    response = alice_api.post(f"/api/v1/datasets/{world.dataset.id}/split", HOSTILE_SPLITS[name], format="json")
    assert response.status_code == 400, response.content[:300]
    assert response.json()["detail"]
    assert Dataset.objects.count() == before


@pytest.mark.parametrize("name", [*HOSTILE_PATHS, "absolute path", "home", "the storage root"])
def test_the_preview_never_takes_a_base_path_from_the_request(world, alice_browser, tmp_path, settings, name):
    base = {
        **HOSTILE_PATHS,
        "absolute path": "/etc",
        "home": "~/.cache/huggingface",
        "the storage root": str(settings.LOCAL_STORAGE_ROOT),
    }[name]
    # A base is offered (the demo one, by name): a path given instead is refused, never opened.
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "tokenizer.json").write_text("{}")
    (tmp_path / "tokenizer_config.json").write_text("{}")
    settings.DEMO_BASE_DIR = tmp_path
    response = alice_browser.get(f"/datasets/{world.dataset.id}/", {"base": base})
    assert response.status_code == 400
    assert 'class="tok' not in response.content.decode()


def test_a_broken_base_folder_is_reported_on_the_page_not_a_500(world, alice_browser, tmp_path, settings):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "tokenizer.json").write_text("{}")
    (tmp_path / "tokenizer_config.json").write_text("not json")
    settings.DEMO_BASE_DIR = tmp_path
    response = alice_browser.get(f"/datasets/{world.dataset.id}/")
    assert response.status_code == 200
    assert "cannot be read" in response.content.decode() and str(tmp_path) not in response.content.decode()


EDGES_OF_TIME = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"]


def test_the_edges_of_the_date_range_are_a_400_not_a_500(world, alice_api):
    """Instants that fall in year 0 or 10000 once converted to UTC, and whole days whose end does."""
    job_logs = f"/api/v1/jobs/{world.running_job.id}/logs"
    answers = {}
    for stamp in EDGES_OF_TIME:
        posted = alice_api.post(job_logs, [{"message": "x", "timestamp": stamp}], format="json")
        answers[f"POST logs {stamp}"] = posted.status_code
        for path, name in [("/api/v1/models/", "date_to"), ("/api/v1/jobs/", "created_before")]:
            answers[f"{path}?{name}={stamp}"] = alice_api.get(path, {name: stamp}).status_code
    answers["/api/v1/models/?date_to=9999-12-31"] = alice_api.get(
        "/api/v1/models/", {"date_to": "9999-12-31"}
    ).status_code
    assert answers == dict.fromkeys(answers, 400)


NUL_JOB_FIELDS = {
    "name": {"name": "run\x00"},
    "base_model": {"base_model": "tiny\x00base"},
    "string hyperparameter": {"hyperparameters": {"note": "a\x00b"}},
    "string array hyperparameter": {"hyperparameters": {"tags": ["ok", "\x00"]}},
}


def test_a_nul_byte_anywhere_in_a_job_is_refused_at_creation(world, alice_api):
    """Hyperparameters become the trainer's environment variables, which cannot hold NUL (it failed at run time)."""
    Trainer.objects.create(
        name="notes",
        command=["python", "-c", "pass"],
        hyperparameter_schema={"note": {"type": "string", "default": ""}, "tags": {"type": "array", "default": []}},
    )
    jobs_before = Job.objects.count()
    answers = {}
    for trick, fields in NUL_JOB_FIELDS.items():
        body = {"name": "run", "base_model": "tiny", "dataset": world.dataset.id, "trainer": "notes", **fields}
        response = alice_api.post("/api/v1/jobs", body, format="json")
        answers[trick] = (response.status_code, bool(response.json().get("detail")))
    assert answers == dict.fromkeys(NUL_JOB_FIELDS, (400, True))
    assert Job.objects.count() == jobs_before


def test_a_model_cannot_be_registered_ready_without_files(world, alice_api):
    models_before = RegisteredModel.objects.count()
    response = alice_api.post("/api/v1/models", {"name": "hollow", "base_model": "tiny", "status": "ready"})
    assert response.status_code == 400 and "status" in response.json()["errors"]
    assert RegisteredModel.objects.count() == models_before


HOSTILE_GENERATION_FIELDS = [
    {"task": ["generation"]},
    {"task": None},
    {"task": "generation", "judge": []},
    {"task": "generation", "judge": None},
    {"task": "generation", "judge": {"endpoint": ["ollama"], "model": {"x": 1}}},
    {"task": "generation", "judge": {"endpoint": "ollama", "model": "m", "prompt": ["{answer_a}{answer_b}"]}},
    {"task": "generation", "judge": {"endpoint": "ollama", "model": "m", "prompt": "{answer_a}{answer_b}" * 20000}},
    {"task": "generation", "judge": {"endpoint": "x" * 5000, "model": "m"}},
    {"task": "generation", "judge": {"endpoint": "ollama", "model": "m", "prompt": "{answer_a}{answer_b}" * 50}},
    {"task": "generation", "judge": {"endpoint": "ollama", "model": "m\u0000"}},
    {"task": "generation", "json_schema": "not a schema"},
    {"task": "generation", "json_schema": {"type": "object", "properties": {"a": {"type": "nonsense"}}}},
    {"task": "generation", "json_schema": {"$ref": "http://169.254.169.254/latest"} | {"type": 3}},
    {"task": "generation", "json_schema": {"pattern": "(" * 100}},
]


@pytest.mark.parametrize("fields", HOSTILE_GENERATION_FIELDS, ids=range(len(HOSTILE_GENERATION_FIELDS)))
def test_hostile_generation_fields_get_a_clear_400_and_create_nothing(world, alice_api, fields):
    from evaluations.models import Evaluation

    before = Evaluation.objects.count()
    body = {"test_set_path": world.dataset.path, "base_model_name": "tiny", **fields}
    response = alice_api.post(f"/api/v1/models/{world.model.id}/evaluate", body, format="json")
    assert response.status_code == 400, response.content[:300]
    assert response.json()["detail"]
    assert Evaluation.objects.count() == before
