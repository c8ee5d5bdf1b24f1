import io
import json
import struct
import zipfile
import zlib
from hashlib import sha256

import pytest
import requests

from finetune_studio.objects import bucket
from models_app import archive
from tests.factories import make_model

API = "/api/v1/models"
WEIGHTS = bytes(range(256)) * 2048  # 512 KiB
FILES = {
    "lora_adapters/adapter_model.safetensors": WEIGHTS,
    "lora_adapters/adapter_config.json": b'{"r": 8, "lora_alpha": 16}' * 10,
    "gguf/model.gguf": b"GGUF" + b"\x07" * 70000,
    "metrics.json": json.dumps({"final": {"loss": 0.3}}).encode(),
}


def body_of(response) -> bytes:
    return b"".join(response.streaming_content)


def test_the_zip_holds_every_file_intact_plus_a_card_and_metadata(alice_api, alice):
    model = make_model(alice, files=FILES, name="Sentiment LoRA (v2)", training_metrics={"final": {"loss": 0.3}})
    response = alice_api.get(f"{API}/{model.id}/download")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    assert response["Content-Disposition"] == 'attachment; filename="Sentiment-LoRA-v2.zip"'
    data = body_of(response)
    assert int(response["Content-Length"]) == len(data)

    with zipfile.ZipFile(io.BytesIO(data)) as zipped:
        assert zipped.testzip() is None
        assert sorted(zipped.namelist()) == sorted([*FILES, "README.md", "metadata.json"])
        for path, content in FILES.items():
            assert zipped.read(path) == content
            info = zipped.getinfo(path)
            assert zlib.crc32(content) == info.CRC
            assert info.compress_type == zipfile.ZIP_STORED
        metadata = json.loads(zipped.read("metadata.json"))
        card = zipped.read("README.md").decode()
    assert metadata["name"] == "Sentiment LoRA (v2)" and metadata["base_model"] == "tiny-llama"
    assert metadata["training_metrics"] == {"final": {"loss": 0.3}}
    checksums = {item["path"]: item for item in metadata["files"]}
    assert checksums["lora_adapters/adapter_model.safetensors"]["sha256"] == sha256(WEIGHTS).hexdigest()
    assert checksums["gguf/model.gguf"]["crc32"] == f"{zlib.crc32(FILES['gguf/model.gguf']):08x}"
    assert "# Sentiment LoRA (v2)" in card and "tiny-llama" in card and sha256(WEIGHTS).hexdigest() in card


def test_a_model_file_named_readme_keeps_its_name_and_ours_step_aside(alice_api, alice):
    model = make_model(alice, files={"README.md": b"their card", "metadata.json": b"{}"})
    with zipfile.ZipFile(io.BytesIO(body_of(alice_api.get(f"{API}/{model.id}/download")))) as zipped:
        assert zipped.read("README.md") == b"their card"
        assert "studio/README.md" in zipped.namelist() and "studio/metadata.json" in zipped.namelist()


def test_an_empty_model_downloads_as_a_valid_zip_with_its_card(alice_api, alice):
    model = make_model(alice)
    with zipfile.ZipFile(io.BytesIO(body_of(alice_api.get(f"{API}/{model.id}/download")))) as zipped:
        assert zipped.namelist() == ["README.md", "metadata.json"]


def local_header_extra(data: bytes, name: str) -> bytes:
    offset = 0
    while (offset := data.index(b"PK\x03\x04", offset)) >= 0:
        name_length, extra_length = struct.unpack("<HH", data[offset + 26 : offset + 30])
        if data[offset + 30 : offset + 30 + name_length] == name.encode():
            return data[offset + 30 + name_length : offset + 30 + name_length + extra_length]
        offset += 4
    raise AssertionError(name)


def test_the_zip64_path_forced_on_a_small_archive(alice):
    """A member of unknown size is written with ZIP64 headers (as a > 4 GiB member is); readers accept it."""
    model = make_model(alice, files={"weights.safetensors": WEIGHTS, "notes.txt": b"hello " * 1000})
    for item in model.files:
        if item["path"] == "weights.safetensors":
            item["size"] = None  # unknown: no Content-Length, ZIP64 member headers
    zipstream_archive = archive.build_archive(model)
    assert not zipstream_archive.sized
    data = b"".join(zipstream_archive)
    assert struct.unpack("<H", local_header_extra(data, "weights.safetensors")[:2])[0] == 0x0001  # ZIP64 field
    with zipfile.ZipFile(io.BytesIO(data)) as zipped:
        assert zipped.testzip() is None
        assert zipped.read("weights.safetensors") == WEIGHTS
        assert zipped.getinfo("weights.safetensors").compress_type == zipfile.ZIP_STORED
        # Without an exact length to keep, small text is deflated; weights never are.
        assert zipped.getinfo("notes.txt").compress_type == zipfile.ZIP_DEFLATED
        assert zipped.getinfo("README.md").compress_type == zipfile.ZIP_DEFLATED
        assert zipped.read("notes.txt") == b"hello " * 1000


def test_a_missing_object_fails_the_stream_instead_of_ending_a_short_archive(alice_api, alice):
    model = make_model(alice, files=FILES)
    bucket("models").delete(model.file_key("gguf/model.gguf"))
    response = alice_api.get(f"{API}/{model.id}/download")
    assert response.status_code == 200  # the headers went out before storage failed
    with pytest.raises(Exception, match="does not exist"):
        body_of(response)


def test_an_object_whose_size_changed_fails_the_stream(alice_api, alice):
    model = make_model(alice, files=FILES)
    bucket("models").put_bytes(model.file_key("metrics.json"), b"{}")
    with pytest.raises(RuntimeError, match="size did not match"):
        body_of(alice_api.get(f"{API}/{model.id}/download"))


def test_the_page_download_link_needs_a_login_and_streams_the_same_zip(client, alice_browser, alice, bob):
    model = make_model(alice, files=FILES)
    response = alice_browser.get(f"/models/{model.id}/download/")
    with zipfile.ZipFile(io.BytesIO(body_of(response))) as zipped:
        assert zipped.testzip() is None
    client.logout()
    assert client.get(f"/models/{model.id}/download/").status_code == 302
    client.force_login(bob)
    assert client.get(f"/models/{model.id}/download/").status_code == 404


# --- Through a real ASGI server -----------------------------------------------------------------


@pytest.fixture
def served(transactional_db, django_user_model):
    from rest_framework.authtoken.models import Token

    from tests.support.processes import asgi_server

    owner = django_user_model.objects.create_user(username="dana", password="x")
    token = Token.objects.create(user=owner)
    with asgi_server() as base_url:
        yield base_url, owner, {"Authorization": f"Token {token.key}"}


@pytest.mark.slow
def test_under_asgi_the_zip_streams_with_an_exact_length_and_aborts_on_a_storage_error(served):
    base_url, owner, headers = served
    big = bytes(range(256)) * 8192  # 2 MiB
    model = make_model(owner, files={"a.safetensors": big, "b.gguf": b"GGUF" * 1000, "c.json": b"{}"})

    response = requests.get(f"{base_url}{API}/{model.id}/download", headers=headers, timeout=30)
    assert response.status_code == 200
    assert int(response.headers["Content-Length"]) == len(response.content)
    with zipfile.ZipFile(io.BytesIO(response.content)) as zipped:
        assert zipped.testzip() is None and zipped.read("a.safetensors") == big

    # Storage loses an object after the archive has started: the client must see a failed transfer.
    bucket("models").delete(model.file_key("b.gguf"))
    with requests.get(f"{base_url}{API}/{model.id}/download", headers=headers, stream=True, timeout=30) as broken:
        assert broken.status_code == 200
        expected = int(broken.headers["Content-Length"])
        received = bytearray()
        with pytest.raises(requests.exceptions.RequestException):
            for chunk in broken.iter_content(64 * 1024):
                received += chunk
    assert len(received) < expected
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(io.BytesIO(bytes(received)))
