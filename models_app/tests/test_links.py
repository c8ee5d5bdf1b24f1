from urllib.parse import parse_qs, urlparse

import pytest
import requests
from django.core.cache import cache

from finetune_studio.objects import S3Bucket
from models_app import selectors
from tests.factories import make_model

API = "/api/v1/models"
FILES = {
    "lora_adapters/adapter_model.safetensors": b"adapter-weights",
    "gguf/model q4 (final).gguf": b"GGUF-bytes",
    "README.md": b"# card",
}


@pytest.fixture(autouse=True)
def empty_cache():
    cache.clear()
    yield
    cache.clear()


def test_presigned_links_download_from_s3_as_attachments_with_the_configured_lifetime(alice_api, alice, settings):
    settings.PRESIGNED_URL_TTL = 7200
    model = make_model(alice, files=FILES)
    links = alice_api.get(f"{API}/{model.id}").json()["download_links"]
    assert set(links["files"]) == set(FILES)

    response = requests.get(links["gguf"], timeout=10)
    assert response.status_code == 200 and response.content == b"GGUF-bytes"
    # The name is made header-safe by the server: no spaces, quotes or parentheses from the user's path.
    assert response.headers["Content-Disposition"].startswith('attachment; filename="model-q4-final-.gguf"')
    for url in [links["lora_adapters"], links["gguf"], *links["files"].values()]:
        assert parse_qs(urlparse(url).query)["X-Amz-Expires"] == ["7200"]
    adapter = requests.get(links["lora_adapters"], timeout=10)
    assert adapter.content == b"adapter-weights"
    assert adapter.headers["Content-Disposition"].startswith('attachment; filename="adapter_model.safetensors"')


def test_links_are_signed_once_then_served_from_the_cache(alice_api, alice, monkeypatch, settings):
    settings.PRESIGNED_URL_TTL = 3600
    model = make_model(alice, files=FILES)
    signed = []
    original = S3Bucket.presigned_url

    def counting(self, key, **kwargs):
        signed.append(key)
        return original(self, key, **kwargs)

    monkeypatch.setattr(S3Bucket, "presigned_url", counting)
    first = alice_api.get(f"{API}/{model.id}").json()["download_links"]
    second = alice_api.get(f"{API}/{model.id}").json()["download_links"]
    assert first == second
    assert len(signed) == len(FILES)
    cache.clear()  # as if the cached links had reached their refresh time
    third = alice_api.get(f"{API}/{model.id}").json()["download_links"]
    assert len(signed) == 2 * len(FILES)
    assert set(third["files"]) == set(FILES)


@pytest.mark.parametrize(("ttl", "cached_for"), [(86400, 77760), (3600, 3240), (600, 300), (60, 30)])
def test_links_are_cached_for_less_than_their_lifetime(ttl, cached_for):
    assert selectors.link_cache_timeout(ttl) == cached_for


def test_cached_links_expire_before_the_link_does(alice, settings, monkeypatch):
    settings.PRESIGNED_URL_TTL = 3600
    model = make_model(alice, files={"a.bin": b"x"})
    timeouts = []
    original = cache.set_many

    def recording(mapping, timeout=None, **kwargs):
        timeouts.append(timeout)
        return original(mapping, timeout=timeout, **kwargs)

    monkeypatch.setattr(cache, "set_many", recording)
    selectors.model_download_links(model)
    assert timeouts == [3240]


def test_local_storage_links_are_signed_app_links_that_serve_the_file(alice_api, alice, local_storage):
    model = make_model(alice, files={"lora_adapters/adapter_model.safetensors": b"local-weights"})
    links = alice_api.get(f"{API}/{model.id}").json()["download_links"]
    url = links["lora_adapters"]
    assert url.startswith("http://testserver/files/")
    response = alice_api.get(urlparse(url).path)
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"local-weights"
    assert response["Content-Disposition"].startswith("attachment")
    tampered = urlparse(url).path[:-3] + "xyz"
    assert alice_api.get(tampered).status_code == 404


WEIGHTS = b"0123456789"
# Single ranges are served as S3 serves them; several ranges or a malformed header get the whole file.
RANGES = {
    "bytes=2-5": (206, "bytes 2-5/10", b"2345"),
    "bytes=7-": (206, "bytes 7-9/10", b"789"),
    "bytes=-3": (206, "bytes 7-9/10", b"789"),
    "bytes=-30": (206, "bytes 0-9/10", WEIGHTS),
    "bytes=2-100": (206, "bytes 2-9/10", b"23456789"),
    "bytes=9-9": (206, "bytes 9-9/10", b"9"),
    "bytes=0-1,4-5": (200, None, WEIGHTS),
    "bytes=5-2": (200, None, WEIGHTS),
    "bytes=x-": (200, None, WEIGHTS),
    "bytes=10-": (416, None, None),
    "bytes=-0": (416, None, None),
}


def _fetch_range(alice_api, url: str, header: str) -> tuple[int, str | None, bytes]:
    if url.startswith("http://testserver/"):
        response = alice_api.get(urlparse(url).path, HTTP_RANGE=header)
        body = b"".join(response.streaming_content) if response.streaming else response.content
        return response.status_code, response.headers.get("Content-Range"), body
    response = requests.get(url, headers={"Range": header}, timeout=10)
    return response.status_code, response.headers.get("Content-Range"), response.content


@pytest.mark.parametrize("backend", ["s3", "local"])
def test_download_links_honour_a_single_range_on_both_backends(alice_api, alice, request, backend):
    """A big download resumes from where it broke, whether the link is S3's presigned one or the studio's own."""
    if backend == "local":
        request.getfixturevalue("local_storage")
    model = make_model(alice, files={"lora_adapters/adapter_model.safetensors": WEIGHTS})
    url = alice_api.get(f"{API}/{model.id}").json()["download_links"]["lora_adapters"]
    answers = {}
    for header in RANGES:
        status, content_range, body = _fetch_range(alice_api, url, header)
        answers[header] = (status, content_range if status == 206 else None, body if status != 416 else None)
    assert answers == RANGES


def test_an_unsatisfiable_range_on_a_local_link_names_the_size(alice_api, alice, local_storage):
    model = make_model(alice, files={"lora_adapters/adapter_model.safetensors": WEIGHTS})
    url = alice_api.get(f"{API}/{model.id}").json()["download_links"]["lora_adapters"]
    response = alice_api.get(urlparse(url).path, HTTP_RANGE="bytes=10-")
    assert response.status_code == 416
    assert response["Content-Range"] == "bytes */10"
    whole = alice_api.get(urlparse(url).path)
    assert whole["Accept-Ranges"] == "bytes" and whole["Content-Length"] == "10"
    partial = alice_api.get(urlparse(url).path, HTTP_RANGE="bytes=4-")
    assert partial["Content-Length"] == "6"
