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


def recreate_database(name: str) -> None:
    import psycopg

    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")


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
