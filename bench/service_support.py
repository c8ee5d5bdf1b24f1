"""What the benchmarks that run the studio as a service share: a fresh PostgreSQL database, a free port, a
uvicorn web process on loopback, and request latencies measured against it."""

import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
POSTGRES = "postgresql://postgres@127.0.0.1:5432"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def recreate_database(name: str, *, migrate_with: dict | None = None) -> None:
    """Database ``name`` dropped and created empty; migrated when ``migrate_with`` (an environment) is given."""
    import psycopg

    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    if migrate_with is not None:
        subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=migrate_with, check=True)


def local_service_env(db_name: str, *, storage_prefix: str) -> dict:
    """The environment of a studio on database ``db_name`` with local storage in a new temporary folder, no
    Redis, no S3 and no API throttling (the benchmark is the only client)."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "finetune_studio.settings",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{db_name}",
        "SECRET_KEY": "bench-secret-key-" + "x" * 40,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LOG_LEVEL": "WARNING",
        "STATIC_MANIFEST": "false",
        "STORAGE_BACKEND": "local",
        "LOCAL_STORAGE_ROOT": tempfile.mkdtemp(prefix=storage_prefix),
        "API_THROTTLE_USER": "1000000/min",
    }
    env.pop("REDIS_URL", None)
    env.pop("S3_ENDPOINT_URL", None)
    return env


def wait_for(url: str, timeout: float = 60) -> None:
    """Until ``url`` answers below 500 (RuntimeError after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=1).status_code < 500:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


@contextlib.contextmanager
def web_server(env: dict, *, log_name: str):
    """One uvicorn process of the studio (``env`` its environment); yields its base URL, stops it on exit."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "finetune_studio.asgi:application", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", "1", "--no-access-log"]
    with open(Path(tempfile.gettempdir()) / log_name, "wb") as log:
        web = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        base_url = f"http://127.0.0.1:{port}"
        try:
            wait_for(f"{base_url}/healthz")
            yield base_url
        finally:
            os.killpg(web.pid, signal.SIGTERM)
            web.wait(timeout=10)


def latency(base_url: str, path: str, token: str, *, count: int, warmup: int, digits: int = 1):
    """(p50/p95/max in ms over ``count`` GETs after ``warmup`` unmeasured ones, the last response)."""
    headers = {"Authorization": f"Token {token}"}
    timings = []
    with requests.Session() as session:
        for _ in range(warmup):
            session.get(base_url + path, headers=headers, timeout=30).raise_for_status()
        for _ in range(count):
            started = time.perf_counter()
            response = session.get(base_url + path, headers=headers, timeout=30)
            timings.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
    timings.sort()
    summary = {
        "p50_ms": round(statistics.median(timings), digits),
        "p95_ms": round(timings[int(len(timings) * 0.95) - 1], digits),
        "max_ms": round(timings[-1], digits),
    }
    return summary, response
