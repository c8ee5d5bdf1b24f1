import io
import zlib
from hashlib import sha256
from urllib.parse import parse_qs, urlparse

import pytest
import requests

from finetune_studio.objects import ObjectNotFound, UploadTooLarge, bucket


@pytest.fixture(params=["s3", "local"])
def models_bucket(request):
    if request.param == "local":
        request.getfixturevalue("local_storage")
    return bucket("models")


def test_upload_streams_and_reports_size_and_checksums(models_bucket):
    payload = bytes(range(256)) * 40_000  # ~10 MiB, crosses a multipart chunk on S3
    result = models_bucket.upload("users/1/models/7/weights.bin", io.BytesIO(payload))
    assert result.size == len(payload)
    assert result.sha256 == sha256(payload).hexdigest()
    assert result.crc32 == f"{zlib.crc32(payload):08x}"
    assert models_bucket.size("users/1/models/7/weights.bin") == len(payload)
    assert b"".join(models_bucket.iter_chunks("users/1/models/7/weights.bin")) == payload


def test_reads_resume_from_a_byte_offset(models_bucket):
    models_bucket.put_bytes("logs/a.log", b"line one\nline two\n")
    assert models_bucket.read_bytes("logs/a.log", start=9) == b"line two\n"
    assert models_bucket.read_bytes("logs/a.log", start=18) == b""


def test_upload_over_the_limit_is_refused(models_bucket):
    with pytest.raises(UploadTooLarge):
        models_bucket.upload("users/1/big.bin", io.BytesIO(b"x" * 5000), max_bytes=1000)


def test_listing_and_deleting_a_prefix(models_bucket):
    for name in ("a", "b", "c"):
        models_bucket.put_bytes(f"users/1/models/9/{name}", b"x")
    models_bucket.put_bytes("users/2/models/9/keep", b"x")
    assert sorted(i.key for i in models_bucket.list("users/1/")) == [f"users/1/models/9/{n}" for n in "abc"]
    assert models_bucket.delete_prefix("users/1/") == 3
    assert [i.key for i in models_bucket.list("users/")] == ["users/2/models/9/keep"]


def test_missing_objects_raise_not_found(models_bucket):
    with pytest.raises(ObjectNotFound):
        models_bucket.size("nope")


def test_s3_presigned_link_has_configured_lifetime_and_attachment_disposition(settings):
    settings.PRESIGNED_URL_TTL = 3600
    models = bucket("models")
    models.put_bytes("users/1/models/3/adapter.bin", b"weights")
    url = models.presigned_url("users/1/models/3/adapter.bin", filename="adapter.bin")
    assert parse_qs(urlparse(url).query)["X-Amz-Expires"] == ["3600"]
    response = requests.get(url, timeout=10)
    assert response.status_code == 200 and response.content == b"weights"
    assert response.headers["Content-Disposition"].startswith('attachment; filename="adapter.bin"')


def test_local_link_is_served_signed_and_expires(local_storage, client, settings):
    models = bucket("models")
    models.put_bytes("users/1/models/3/adapter.bin", b"weights")
    url = models.presigned_url("users/1/models/3/adapter.bin", filename="adapter.bin")
    response = client.get(url)
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"weights"
    assert 'attachment; filename="adapter.bin"' in response["Content-Disposition"]
    assert client.get(url[:-3] + "abc").status_code == 404

    expired = models.presigned_url("users/1/models/3/adapter.bin", filename="adapter.bin", expires_in=-10)
    assert client.get(expired).status_code == 404
