"""Fixtures every app's tests share: named users, API clients, a real S3 server, Redis."""

import logging
import os
import socket

import pytest
import requests
from django.conf import settings

# Alice owns things, Bob must never see them, Olivia is an operator (staff).
PASSWORD = "correct horse battery staple"

logging.getLogger("werkzeug").setLevel(logging.WARNING)


def pytest_report_header(config):
    from django.db import connection

    database = f"{connection.vendor} ({settings.DATABASES['default']['NAME']})"
    lines = [f"finetune-studio: database={database}, s3={settings.S3_ENDPOINT_URL} (moto server)"]
    if connection.vendor != "postgresql":
        lines.append(
            "finetune-studio: PostgreSQL not reachable on 127.0.0.1:5432 -> running on SQLite; "
            "tests marked 'postgres' are skipped"
        )
    if not _redis_answers():
        lines.append("finetune-studio: Redis not reachable on 127.0.0.1:6379 -> tests marked 'redis' are skipped")
    return lines


def _redis_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.3):
            return True
    except OSError:
        return False


def pytest_collection_modifyitems(config, items):
    from django.db import connection

    skip_redis = pytest.mark.skip(reason="Redis is not reachable on 127.0.0.1:6379")
    skip_pg = pytest.mark.skip(reason="PostgreSQL is not reachable: running on SQLite")
    redis_ok = _redis_answers()
    for item in items:
        if "redis" in item.keywords and not redis_ok:
            item.add_marker(skip_redis)
        if "postgres" in item.keywords and connection.vendor != "postgresql":
            item.add_marker(skip_pg)


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-speaking HTTP server (moto's server mode) on loopback, for the whole run."""
    from moto.server import ThreadedMotoServer

    port = int(os.environ["TEST_S3_PORT"])
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield settings.S3_ENDPOINT_URL
    server.stop()


@pytest.fixture(autouse=True)
def s3_buckets(s3_server):
    """Empty buckets for every test."""
    from finetune_studio.objects import bucket

    requests.post(f"{s3_server}/moto-api/reset", timeout=10).raise_for_status()
    for alias in settings.BUCKETS:
        bucket(alias).ensure_exists()
    return s3_server


@pytest.fixture
def local_storage(settings, tmp_path):
    """Switch this test to standalone file storage under a temporary folder."""
    from finetune_studio.objects import reset_bucket_cache

    settings.STORAGE_BACKEND = "local"
    settings.LOCAL_STORAGE_ROOT = tmp_path / "storage"
    settings.STORAGES = {
        **settings.STORAGES,
        **{
            alias: {
                "BACKEND": "django.core.files.storage.FileSystemStorage",
                "OPTIONS": {"location": str(tmp_path / "storage" / alias)},
            }
            for alias in settings.BUCKETS
        },
    }
    reset_bucket_cache()
    yield tmp_path / "storage"
    reset_bucket_cache()


def _make_user(django_user_model, username: str, **extra):
    return django_user_model.objects.create_user(
        username=username, email=f"{username}@example.com", password=PASSWORD, **extra
    )


@pytest.fixture
def alice(db, django_user_model):
    return _make_user(django_user_model, "alice")


@pytest.fixture
def bob(db, django_user_model):
    return _make_user(django_user_model, "bob")


@pytest.fixture
def olivia(db, django_user_model):
    """Staff: sees everyone's objects."""
    return _make_user(django_user_model, "olivia", is_staff=True)


@pytest.fixture
def api_client_for(db):
    """``api_client_for(user)`` → an APIClient authenticated with the user's real API token."""
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    def make(user=None):
        client = APIClient()
        if user is not None:
            token, _ = Token.objects.get_or_create(user=user)
            client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        return client

    return make


@pytest.fixture
def alice_api(api_client_for, alice):
    return api_client_for(alice)


@pytest.fixture
def bob_api(api_client_for, bob):
    return api_client_for(bob)


@pytest.fixture
def olivia_api(api_client_for, olivia):
    return api_client_for(olivia)


@pytest.fixture
def anon_api(api_client_for):
    return api_client_for(None)


@pytest.fixture
def alice_browser(client, alice):
    """Django's test client logged in as Alice (session + CSRF as a browser would)."""
    client.force_login(alice)
    return client


@pytest.fixture
def redis_url(settings):
    """A real Redis (db 15, flushed) for tests of the production fan-out and cache."""
    import redis

    url = settings.TEST_REDIS_URL
    connection = redis.Redis.from_url(url, socket_timeout=2)
    connection.flushdb()
    yield url
    connection.flushdb()
