"""Test settings: the production code paths against real services on loopback.

PostgreSQL is used when it answers on 127.0.0.1:5432 (or TEST_DATABASE_URL is set);
otherwise SQLite, and the run says so. S3 is a moto server started by the test
fixtures on the port chosen here. Redis-backed tests ask for the ``redis_url`` fixture.
"""

import os
import socket


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.3):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if os.environ.get("TEST_DATABASE_URL"):
    os.environ["DATABASE_URL"] = os.environ["TEST_DATABASE_URL"]
elif os.environ.get("TEST_DATABASE", "auto") != "sqlite" and _port_open("127.0.0.1", 5432):
    os.environ["DATABASE_URL"] = "postgres://postgres@127.0.0.1:5432/test"
else:
    os.environ.pop("DATABASE_URL", None)

# Under pytest-xdist each worker process (gw0, gw1, …) starts its own S3 server and uses its own Redis database;
# pytest-django gives each its own test database.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
_WORKER_INDEX = int(_WORKER.removeprefix("gw")) if _WORKER.startswith("gw") else 0
if _WORKER:
    os.environ["TEST_S3_PORT"] = str(_free_port())
os.environ.setdefault("TEST_S3_PORT", str(_free_port()))
os.environ["S3_ENDPOINT_URL"] = f"http://127.0.0.1:{os.environ['TEST_S3_PORT']}"
os.environ["S3_ACCESS_KEY_ID"] = "testing"
os.environ["S3_SECRET_ACCESS_KEY"] = "testing"
os.environ["STORAGE_BACKEND"] = "s3"
os.environ.pop("REDIS_URL", None)
os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production-" + "x" * 20)
os.environ["OLLAMA_URL"] = "http://127.0.0.1:9"  # nothing listens there: tests point it at their own server

from .settings import *  # noqa: E402,F403
from .settings import REST_FRAMEWORK, STORAGES  # noqa: E402

ALLOWED_HOSTS = ["*"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_EAGER_PROPAGATES = True
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
REST_FRAMEWORK = {
    **REST_FRAMEWORK,
    "DEFAULT_THROTTLE_RATES": {"user": "100000/min", "anon": "100000/min"},
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):  # noqa: F405
    # A file, not memory: end-to-end tests share the test database with server processes.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-db.sqlite3")}  # noqa: F405
# One Redis database per worker (make test runs at most 8), none of those other tests and the benches name.
_REDIS_DATABASES = (15, 14, 13, 11, 10, 9, 8, 7)
TEST_REDIS_URL = os.environ.get(
    "TEST_REDIS_URL", f"redis://127.0.0.1:6379/{_REDIS_DATABASES[_WORKER_INDEX % len(_REDIS_DATABASES)]}"
)
# The S3 test server exists only while pytest runs: `manage.py check` (make lint) would warn that it cannot reach it.
SILENCED_SYSTEM_CHECKS = ["finetune_studio.W002"]
