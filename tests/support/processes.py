"""Real processes for end-to-end tests: an ASGI web server (uvicorn) and a Celery worker.

They run the production settings module (``finetune_studio.settings``) against the
test database, the test S3 server and, when given, Redis: the code under test never
knows it is under test.
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import requests
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url() -> str:
    """The URL of the database the tests are using right now (the test database)."""
    params = connection.settings_dict
    if connection.vendor == "postgresql":
        user = params.get("USER") or "postgres"
        host = params.get("HOST") or "127.0.0.1"
        port = params.get("PORT") or 5432
        return f"postgres://{user}@{host}:{port}/{params['NAME']}"
    return f"sqlite:///{params['NAME']}"


def service_env(*, redis_url: str | None = None, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO_SETTINGS_MODULE"))}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "finetune_studio.settings",
            "DATABASE_URL": database_url(),
            "S3_ENDPOINT_URL": settings.S3_ENDPOINT_URL,
            "S3_ACCESS_KEY_ID": settings.S3_ACCESS_KEY_ID,
            "S3_SECRET_ACCESS_KEY": settings.S3_SECRET_ACCESS_KEY,
            "STORAGE_BACKEND": settings.STORAGE_BACKEND,
            "SECRET_KEY": settings.SECRET_KEY,
            "OLLAMA_URL": settings.OLLAMA_URL,
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "PYTHONUNBUFFERED": "1",
            "LOG_LEVEL": "WARNING",
            "STATIC_MANIFEST": "false",
        }
    )
    if settings.STORAGE_BACKEND == "local":
        env["LOCAL_STORAGE_ROOT"] = str(settings.LOCAL_STORAGE_ROOT)
    env.pop("REDIS_URL", None)
    if redis_url:
        env["REDIS_URL"] = redis_url
    env.update(extra)
    return env


@contextlib.contextmanager
def asgi_server(*, env: dict | None = None, log_path: Path | None = None, workers: int = 1) -> Iterator[str]:
    """uvicorn serving the project; yields its base URL once /healthz answers."""
    port = free_port()
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
    command = [sys.executable, "-m", "uvicorn", "finetune_studio.asgi:application", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", str(workers), "--timeout-graceful-shutdown", "2"]
    process = subprocess.Popen(
        command, cwd=ROOT, env=env or service_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_healthy(base_url, process)
        yield base_url
    finally:
        _stop(process)
        if log_path:
            log.close()


@contextlib.contextmanager
def celery_worker(
    *, env: dict, queues: str = "default,evaluations,training", log_path: Path | None = None
) -> Iterator[subprocess.Popen]:
    """A real Celery worker process (threads pool) consuming from Redis."""
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
    command = [sys.executable, "-m", "celery", "-A", "finetune_studio", "worker", "-Q", queues, "-P", "threads"]
    command += ["-c", "4", "--without-mingle", "--without-gossip", "--loglevel", "INFO"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        time.sleep(1.5)
        if process.poll() is not None:
            raise RuntimeError(f"Celery worker exited with {process.returncode}")
        yield process
    finally:
        _stop(process)
        if log_path:
            log.close()


def _wait_until_healthy(base_url: str, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before answering")
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{base_url} did not become healthy within {timeout}s")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
