import io
import zlib
from hashlib import sha256

import pytest
import requests

from finetune_studio.objects import bucket
from models_app.models import RegisteredModel
from tests.factories import make_model

API = "/api/v1/models"


def named(data: bytes, name: str = "upload.bin"):
    handle = io.BytesIO(data)
    handle.name = name
    return handle


def upload(client, model_id, path, data, *, name="upload.bin"):
    return client.post(f"{API}/{model_id}/files", {"path": path, "file": named(data, name)}, format="multipart")


def stored_keys(model):
    return sorted(info.key for info in bucket("models").list(f"users/{model.owner_id}/"))


def test_an_uploaded_file_is_streamed_to_the_models_prefix_with_checksums(alice_api, alice):
    model = make_model(alice, status="pending")
    payload = bytes(range(256)) * 4096  # 1 MiB: several upload chunks
    response = upload(alice_api, model.id, "lora_adapters/adapter_model.safetensors", payload)
    assert response.status_code == 201, response.content
    assert response.json() == {
        "path": "lora_adapters/adapter_model.safetensors",
        "size": len(payload),
        "sha256": sha256(payload).hexdigest(),
        "crc32": f"{zlib.crc32(payload):08x}",
        "content_type": "application/octet-stream",
        "kind": "adapter",
    }
    key = f"users/{alice.id}/models/{model.id}/lora_adapters/adapter_model.safetensors"
    assert bucket("models").read_bytes(key) == payload
    model.refresh_from_db()
    assert model.total_size == len(payload) and model.status == "uploading" and model.type == "lora"
    assert model.lora_adapters_path == f"users/{alice.id}/models/{model.id}/lora_adapters/"
    links = alice_api.get(f"{API}/{model.id}").json()["download_links"]
    assert links["lora_adapters"] == links["files"]["lora_adapters/adapter_model.safetensors"]
    assert requests.get(links["lora_adapters"], timeout=10).content == payload


def test_a_file_larger_than_a_multipart_part_arrives_whole(alice_api, alice):
    model = make_model(alice)
    payload = b"\x01\x02\x03\x04" * (5 * 1024 * 1024)  # 20 MiB: more than one 16 MiB part
    response = upload(alice_api, model.id, "weights/model.safetensors", payload)
    assert response.status_code == 201, response.content
    assert response.json()["sha256"] == sha256(payload).hexdigest()
    assert bucket("models").size(model.file_key("weights/model.safetensors")) == len(payload)


def test_uploading_the_same_path_again_replaces_the_manifest_entry(alice_api, alice):
    model = make_model(alice)
    upload(alice_api, model.id, "config.json", b'{"a": 1}')
    upload(alice_api, model.id, "config.json", b'{"a": 22}')
    model.refresh_from_db()
    assert [(f["path"], f["size"]) for f in model.files] == [("config.json", 9)]
    assert model.total_size == 9


@pytest.mark.parametrize(
    "path",
    ["../escape.bin", "/abs/path.bin", "a/../../b", "dir/", "a\\b", "", "a/./b", "x" * 300, "a/b/c/d/e/f/g/h/i/j"],
)
def test_hostile_paths_are_refused_before_anything_is_stored(alice_api, alice, path):
    model = make_model(alice)
    response = upload(alice_api, model.id, path, b"data")
    assert response.status_code == 400, response.content
    assert "path" in response.json()["errors"]
    assert stored_keys(model) == []
    model.refresh_from_db()
    assert model.files == []


def test_the_path_must_come_before_the_file(alice_api, alice):
    model = make_model(alice)
    body, content_type = _multipart([("file", "a.bin", b"data"), ("path", None, b"a.bin")])
    response = alice_api.generic("POST", f"{API}/{model.id}/files", body, content_type=content_type)
    assert response.status_code == 400
    assert "before 'file'" in response.json()["errors"]["path"][0]
    assert stored_keys(model) == []


def test_a_request_without_a_file_is_a_400(alice_api, alice):
    model = make_model(alice)
    response = alice_api.post(f"{API}/{model.id}/files", {"path": "a.bin"}, format="multipart")
    assert response.status_code == 400
    assert "'file'" in response.json()["detail"]


def test_a_file_over_the_limit_is_a_413_and_leaves_nothing(alice_api, alice, settings):
    settings.MODEL_FILE_MAX_UPLOAD_BYTES = 1024 * 1024
    model = make_model(alice)
    response = upload(alice_api, model.id, "big.bin", b"x" * (3 * 1024 * 1024))
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]
    assert stored_keys(model) == []


def test_a_storage_failure_during_upload_is_a_503_with_the_reason(alice_api, alice):
    model = make_model(alice)
    models_bucket = bucket("models")
    models_bucket.client.delete_bucket(Bucket=models_bucket.name)
    response = upload(alice_api, model.id, "adapter.safetensors", b"x" * 1000)
    assert response.status_code == 503
    assert "NoSuchBucket" in response.json()["detail"]
    model.refresh_from_db()
    assert model.files == [] and model.status == "ready"


def test_a_storage_failure_on_a_multipart_upload_is_a_503_too(alice_api, alice):
    model = make_model(alice)
    models_bucket = bucket("models")
    models_bucket.client.delete_bucket(Bucket=models_bucket.name)
    response = upload(alice_api, model.id, "big.safetensors", b"x" * (17 * 1024 * 1024))
    assert response.status_code == 503
    assert RegisteredModel.objects.get(id=model.id).files == []


def test_archived_models_refuse_new_files(alice_api, alice):
    model = make_model(alice, status="archived")
    response = upload(alice_api, model.id, "a.bin", b"x")
    assert response.status_code == 409
    assert stored_keys(model) == []


def test_a_browser_session_upload_also_lands_in_storage(client, alice):
    """Session auth reads the body in the CSRF check first; the upload must still arrive (and be validated)."""
    client.force_login(alice)
    model = make_model(alice)
    response = client.post(f"{API}/{model.id}/files", {"path": "notes.md", "file": named(b"# notes", "n.md")})
    assert response.status_code == 201, response.content
    assert bucket("models").read_bytes(model.file_key("notes.md")) == b"# notes"
    bad = client.post(f"{API}/{model.id}/files", {"path": "../x", "file": named(b"x")})
    assert bad.status_code == 400


def test_a_csrf_checked_browser_upload_parsed_early_still_lands_in_storage(alice):
    """With CSRF enforced, Django reads the form (and the file) before the view; the file must still be stored."""
    from django.test import Client

    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)
    browser.get("/models/")
    token = browser.cookies["csrftoken"].value
    model = make_model(alice)
    url = f"{API}/{model.id}/files"
    form = {"csrfmiddlewaretoken": token, "path": "lora_adapters/adapter_model.safetensors", "file": named(b"w" * 10)}
    response = browser.post(url, form)
    assert response.status_code == 201, response.content
    assert response.json()["sha256"] == sha256(b"w" * 10).hexdigest()
    assert bucket("models").read_bytes(model.file_key("lora_adapters/adapter_model.safetensors")) == b"w" * 10
    refused = browser.post(url, {"csrfmiddlewaretoken": token, "path": "../x", "file": named(b"x")})
    assert refused.status_code == 400
    assert browser.post(url, {"path": "a.bin", "file": named(b"x")}).status_code == 403  # no token, no upload


def _multipart(parts):
    boundary = "studioboundary"
    chunks = []
    for field, filename, data in parts:
        disposition = f'form-data; name="{field}"' + (f'; filename="{filename}"' if filename else "")
        chunks.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"
