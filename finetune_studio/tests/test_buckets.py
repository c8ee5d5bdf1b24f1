"""A fresh S3/MinIO has no buckets: a command creates them, /healthz and `manage.py check` name the missing ones."""

import io

import pytest
import requests
from django.conf import settings as django_settings
from django.core import checks
from django.core.management import call_command

from finetune_studio.objects import bucket

pytestmark = pytest.mark.django_db


@pytest.fixture
def fresh_s3(s3_buckets):
    """The S3 server as a new installation finds it: no bucket at all."""
    requests.post(f"{s3_buckets}/moto-api/reset", timeout=10).raise_for_status()
    return s3_buckets


def _client():
    return bucket("datasets").client


def test_buckets_create_makes_every_missing_bucket_private_and_can_run_again(fresh_s3):
    out = io.StringIO()
    call_command("buckets_create", stdout=out)
    assert [line.split(":")[0] for line in out.getvalue().splitlines()] == ["datasets", "models", "logs"]
    assert out.getvalue().count("(created)") == 3
    names = {entry["Name"] for entry in _client().list_buckets()["Buckets"]}
    assert names == set(django_settings.BUCKETS.values())
    for name in names:
        grants = _client().get_bucket_acl(Bucket=name)["Grants"]
        assert [grant["Permission"] for grant in grants] == ["FULL_CONTROL"]  # the owner, nobody else
        assert grants[0]["Grantee"]["Type"] == "CanonicalUser"
        with pytest.raises(_client().exceptions.ClientError, match="NoSuchBucketPolicy"):
            _client().get_bucket_policy(Bucket=name)

    again = io.StringIO()
    call_command("buckets_create", stdout=again)
    assert again.getvalue().count("(exists)") == 3


def test_buckets_create_adds_only_what_is_missing(fresh_s3):
    _client().create_bucket(Bucket=django_settings.BUCKETS["models"])
    bucket("models").put_bytes("kept.txt", b"still here")
    out = io.StringIO()
    call_command("buckets_create", stdout=out)
    assert "models: models (exists)" in out.getvalue() and out.getvalue().count("(created)") == 2
    assert bucket("models").read_bytes("kept.txt") == b"still here"


def test_healthz_names_the_missing_buckets_until_they_are_created(client, fresh_s3):
    _client().create_bucket(Bucket=django_settings.BUCKETS["logs"])
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded"
    assert body["buckets"].startswith("missing: datasets (datasets), models (models);")
    assert "buckets_create" in body["buckets"]

    call_command("buckets_create", stdout=io.StringIO())
    assert client.get("/healthz").json() == {"status": "ok", "buckets": "ok"}


def test_the_system_check_warns_of_each_missing_bucket(fresh_s3):
    warnings = checks.run_checks(tags=["storage"])
    assert [(warning.id, warning.level) for warning in warnings] == [("finetune_studio.W001", checks.WARNING)] * 3
    assert "'datasets' does not exist" in warnings[0].msg and "buckets_create" in warnings[0].hint
    call_command("buckets_create", stdout=io.StringIO())
    assert checks.run_checks(tags=["storage"]) == []


def test_the_system_check_says_when_storage_does_not_answer(settings):
    from finetune_studio.objects import reset_bucket_cache
    from tests.support.processes import free_port

    settings.SILENCED_SYSTEM_CHECKS = []  # the test settings silence it for `make lint`
    nowhere = f"http://127.0.0.1:{free_port()}"
    settings.S3_ENDPOINT_URL = nowhere
    settings.STORAGES = {
        alias: {**config, "OPTIONS": {**config["OPTIONS"], "endpoint_url": nowhere}}
        if alias in django_settings.BUCKETS
        else config
        for alias, config in django_settings.STORAGES.items()
    }
    reset_bucket_cache()
    try:
        assert [warning.id for warning in checks.run_checks(tags=["storage"])] == ["finetune_studio.W002"]
    finally:
        reset_bucket_cache()


def test_local_storage_needs_no_bucket_and_says_ok(client, local_storage):
    assert checks.run_checks(tags=["storage"]) == []
    assert client.get("/healthz").json() == {"status": "ok", "buckets": "ok"}
