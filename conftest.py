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
def storage_spy(settings, s3_buckets):
    """Route every S3 call through a FaultProxy from now on: ``storage_spy.connections`` counts them.

    The bucket objects are rebuilt with fresh boto3 clients, so no pooled connection bypasses the
    proxy: zero connections means no storage call at all.
    """
    from django.conf import settings as settings_module

    from finetune_studio.objects import reset_bucket_cache
    from tests.support.faultproxy import FaultProxy

    host, port = settings_module.S3_ENDPOINT_URL.removeprefix("http://").split(":")
    proxy = FaultProxy(host, int(port)).start()
    settings.S3_ENDPOINT_URL = proxy.url
    settings.S3_PUBLIC_ENDPOINT_URL = proxy.url
    settings.STORAGES = {
        alias: (
            {**config, "OPTIONS": {**config["OPTIONS"], "endpoint_url": proxy.url}}
            if alias in settings_module.BUCKETS
            else config
        )
        for alias, config in settings_module.STORAGES.items()
    }
    reset_bucket_cache()
    yield proxy
    proxy.stop()
    reset_bucket_cache()


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


# --- Test data: the builders of tests/factories.py, as fixtures ---------------------------------------


@pytest.fixture
def make_job(db):
    """``make_job(owner, status=…, trainer=…, finished_days_ago=…, artifacts=…)`` → a Job row."""
    from tests.factories import make_job

    return make_job


@pytest.fixture
def demo_base_entry(settings, tmp_path):
    """demo-base in the catalogue as a folder with a config: enough to create lora-sft jobs, not to run them."""
    import json

    settings.DEMO_BASE_DIR = tmp_path / "demo-base"
    settings.DEMO_BASE_DIR.mkdir()
    (settings.DEMO_BASE_DIR / "config.json").write_text(json.dumps({"model_type": "llama"}))
    settings.HF_HUB_CACHE = tmp_path / "hub"
    return settings.DEMO_BASE_DIR


@pytest.fixture
def make_dataset(db):
    """``make_dataset(owner, rows=None, filename=…, name=…)`` → a dataset uploaded through the service."""
    from tests.factories import make_dataset

    return make_dataset


@pytest.fixture
def make_test_set(db):
    """``make_test_set(owner, records=None, raw=…, labels=…)`` → a dataset row and its object, written as given."""
    from tests.factories import make_test_set

    return make_test_set


@pytest.fixture
def queued_job(db, tasks_not_run):
    """``queued_job(owner, dataset, trainer, **hyperparameters)``: created and queued; no worker runs it."""
    from tests.factories import make_queued_job

    return make_queued_job


@pytest.fixture
def tasks_not_run():
    """Tasks go to the (in-memory) broker instead of running in-process; ``tasks_not_run()`` drains and returns
    what was queued as (task name, args, queue) tuples. The test then runs what it wants itself."""
    from finetune_studio.celery import app

    drained: list[tuple[str, list, str]] = []
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = False

    def queued() -> list[tuple[str, list, str]]:
        import ast

        with app.connection_for_read() as connection:
            for queue in ("default", "training", "evaluations"):
                simple = connection.SimpleQueue(queue)
                try:
                    while True:
                        message = simple.get(block=False)
                        args = ast.literal_eval(message.headers.get("argsrepr") or "()")
                        drained.append((message.headers["task"], list(args), queue))
                        message.ack()
                except simple.Empty:
                    pass
                finally:
                    simple.close()
        return list(drained)

    queued()  # anything left over by an earlier test is not this test's
    drained.clear()
    yield queued
    queued()
    app.conf.task_always_eager = previous


@pytest.fixture
def job_signals():
    """What the jobs app announced during the test: ``[(signal name, {job_id, …}), …]`` in order."""
    from jobs.signals import job_finished, job_succeeded

    sent: list[tuple[str, dict]] = []

    def on_finished(sender, **data):
        data.pop("signal", None)
        sent.append(("job_finished", data))

    def on_succeeded(sender, **data):
        data.pop("signal", None)
        sent.append(("job_succeeded", data))

    job_finished.connect(on_finished, dispatch_uid="test.job_finished")
    job_succeeded.connect(on_succeeded, dispatch_uid="test.job_succeeded")
    yield sent
    job_finished.disconnect(dispatch_uid="test.job_finished")
    job_succeeded.disconnect(dispatch_uid="test.job_succeeded")


class ChannelListener:
    """A real django-eventstream listener on one channel: what a connected client would be handed."""

    def __init__(self, channel: str):
        import asyncio

        from django_eventstream.views import Listener, get_listener_manager

        self.manager = get_listener_manager()
        self.listener = Listener()
        self.listener.loop = asyncio.new_event_loop()
        self.listener.channels = {channel}
        self.channel = channel
        self.manager.add_listener(self.listener)

    def events(self) -> list:
        return list(self.listener.channel_items.get(self.channel, []))

    def close(self) -> None:
        self.manager.remove_listener(self.listener)
        self.listener.loop.close()


@pytest.fixture
def listen():
    """``listen(channel)`` → a ChannelListener; ``.events()`` lists what was published on it (in-process fan-out)."""
    opened = []

    def open_listener(channel: str) -> ChannelListener:
        listener = ChannelListener(channel)
        opened.append(listener)
        return listener

    yield open_listener
    for listener in opened:
        listener.close()
