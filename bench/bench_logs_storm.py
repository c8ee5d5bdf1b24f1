"""A reconnect storm against the production topology on this machine; prints one JSON object.

    .venv/bin/python bench/bench_logs_storm.py [--clients 1000,5000]

What every browser does after a web process restarts: N clients open ``GET /api/v1/jobs/:id/logs``
(SSE) at the same instant. Topology: 2 uvicorn workers (fresh for each N, as after a restart),
PostgreSQL (database ``bench_logs_storm``, recreated), a private redis-server for the fan-out, an
emitter process appending 5 lines 4 times a second while the storm runs, and the clients in this
process (raw asyncio connections, tests/support/sse_storm.py). 20 streams are open before the
storm ("already open"); each opening replays the job's last 500 lines (the default backlog).

Per N: share of streams opened, seconds until all were open (p50/p99 too) and until all had their
backlog, streams cut (body ended while the client listened: the storm's and the already-open ones),
what the others were answered. The baseline in the same run: one client opening on the same idle
server (``one_client_open_ms``), so ``all_open_vs_one_client`` says how many single opens the storm costs.

Figures, 2026-12-01, the 2 vCPUs shared with other work (load average 6-14 during the runs):
- before (the pool's own queue, 10 connections, 10 s): 1,000 → all open in 10.1 s (the slowest just under
  DB_POOL_TIMEOUT); 5,000 → 64.7 % opened, 1,765 answered 503 "database unavailable", 8 open streams cut.
- after (stream_db turns): 1,000 → 100 % open in 9.4 s, all with their backlog by 9.4 s, cut 0; 2,500 → 100 %
  in 26.9 s, cut 0; 5,000 (before shared reads, 60 s wait) → 80.2 % opened, 988 answered 503 "busy" with
  Retry-After after waiting 60 s, cut 0, none "database unavailable".
"""

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.reliability.support import private_redis  # noqa: E402
from tests.support.processes import asgi_server  # noqa: E402
from tests.support.sse_storm import Storm  # noqa: E402

PG = "postgres://postgres@127.0.0.1:5432"
DATABASE = "bench_logs_storm"
ALREADY_OPEN = 20
USERS = 20  # browsers of 20 people: 250 streams each at 5,000, below the per-user API throttle (3000/min)
BACKLOG_LINES = 500
SETTINGS_SHOWN = ("DB_POOL_MAX_SIZE", "DB_POOL_TIMEOUT", "STREAM_DB_SLOTS", "STREAM_OPEN_WAIT_SECONDS")
HOLD_SECONDS = 12  # after the storm: two access re-checks and a keep-alive window, time for late cuts


def service_env(redis_url: str, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO_SETTINGS_MODULE"))}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "finetune_studio.settings",
            "DATABASE_URL": f"{PG}/{DATABASE}",
            "REDIS_URL": redis_url,
            "SECRET_KEY": "bench-secret-key-" + "x" * 40,
            "STORAGE_BACKEND": "local",
            "LOCAL_STORAGE_ROOT": str(Path(tempfile.gettempdir()) / "bench_logs_storm_storage"),
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "LOG_LEVEL": "WARNING",
            "STATIC_MANIFEST": "false",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def manage(env: dict, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    )
    return result.stdout


def prepare(env: dict) -> tuple[list[str], int]:
    """A fresh database: USERS users with API tokens, one running job with BACKLOG_LINES lines they all see.

    The job's owner is staff (``storm-0``); the others see it as staff too, so each user's streams
    have their own access grant and the throttle (per user) counts each user's share.
    """
    import psycopg

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DATABASE}")
    manage(env, "migrate", "--noinput", "-v", "0")
    code = (
        "import json\n"
        "from django.contrib.auth import get_user_model\n"
        "from rest_framework.authtoken.models import Token\n"
        "from jobs.models import Job, Trainer\n"
        "from logs_app.services import log_lines_append\n"
        f"users = [get_user_model().objects.create(username=f'storm-{{n}}', is_staff=True) for n in range({USERS})]\n"
        "tokens = [Token.objects.create(user=user).key for user in users]\n"
        "trainer, _ = Trainer.objects.get_or_create(name='external')\n"
        "job = Job.objects.create(owner=users[0], name='storm', base_model='b', trainer=trainer, status='running')\n"
        f"lines = [{{'message': f'step {{n}} loss 0.5'}} for n in range({BACKLOG_LINES})]\n"
        "log_lines_append(job_id=job.id, lines=lines)\n"
        "print(json.dumps({'tokens': tokens, 'job': job.id}))\n"
    )
    out = json.loads(manage(env, "shell", "-c", code).strip().splitlines()[-1])
    return out["tokens"], out["job"]


def start_emitter(env: dict, job_id: int, seconds: float) -> subprocess.Popen:
    command = [sys.executable, __file__, "emit", str(job_id), str(seconds)]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)


def _emit(job_id: int, seconds: float) -> None:
    import django

    django.setup()
    from logs_app.services import log_lines_append

    started = time.monotonic()
    while time.monotonic() - started < seconds:
        log_lines_append(job_id=job_id, lines=[{"message": f"live line {n}"} for n in range(5)])
        time.sleep(0.25)


async def one_client_open_seconds(url: str, tokens: list[str]) -> float:
    storm = Storm(url, tokens, 1)
    await storm.open_all(timeout=30)
    await storm.close()
    return storm.streams[0].opened_after or float("nan")


async def scenario(env: dict, url: str, tokens: list[str], job_id: int, clients: int) -> dict:
    single = [await one_client_open_seconds(url, tokens) for _ in range(5)]
    already = Storm(url, tokens, ALREADY_OPEN)
    await already.open_all(timeout=30)
    emitter = start_emitter(env, job_id, seconds=600)
    try:
        storm = Storm(url, tokens, clients)
        load_before = os.getloadavg()[0]
        await storm.open_all(timeout=180)
        await storm.lines_reached_all(timeout=180)
        await asyncio.sleep(HOLD_SECONDS)
        result = storm.summary()
        result["already_open_cut"] = already.summary()["cut"]
        result["live_events_per_open_stream"] = round(
            sum(s.events for s in storm.streams if s.opened_after is not None) / max(1, result["opened"]), 1
        )
        one = sorted(single)[len(single) // 2]
        result["one_client_open_ms"] = round(1000 * one, 1)
        if result["seconds_until_all_open"] is not None:
            result["all_open_vs_one_client"] = round(result["seconds_until_all_open"] / one, 1)
        result["load_average_1min_before"] = round(load_before, 2)
        await storm.close()
        await already.close()
    finally:
        emitter.terminate()
        emitter.wait(timeout=10)
    return result


def server_log_counts(path: Path) -> dict:
    """What the web processes logged: unhandled errors (a cut body logs one) and pool timeouts."""
    text = path.read_text(errors="replace")
    return {
        "unhandled_errors": text.count("Exception in ASGI application"),
        "pool_timeouts": text.count("PoolTimeout"),
        "tracebacks": text.count("Traceback (most recent call last)"),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", default="1000,5000", help="comma-separated storm sizes")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 20000), hard))
    started = time.monotonic()
    results: dict = {
        "topology": f"{args.workers} uvicorn workers, PostgreSQL, private Redis, emitter process, clients on the same"
        f" {os.cpu_count()} cores",
    }
    with private_redis() as broker:
        env = service_env(broker.url)
        tokens, job_id = prepare(env)
        results["settings"] = {name: env.get(name, "default") for name in SETTINGS_SHOWN}
        for clients in [int(n) for n in args.clients.split(",")]:
            log_path = Path(tempfile.gettempdir()) / f"bench_logs_storm_{clients}.log"
            with asgi_server(env=env, workers=args.workers, log_path=log_path) as base:
                url = f"{base}/api/v1/jobs/{job_id}/logs"
                results[f"storm_{clients}"] = asyncio.run(scenario(env, url, tokens, job_id, clients))
            results[f"storm_{clients}"]["server_log"] = server_log_counts(log_path)
    results["targets_met"] = {
        name: value["opened_share"] == 1 and value["cut"] == 0 and value["already_open_cut"] == 0
        for name, value in results.items()
        if name.startswith("storm_")
    }
    results["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(results))


if __name__ == "__main__" and sys.argv[1:2] == ["emit"]:
    _emit(int(sys.argv[2]), float(sys.argv[3]))
elif __name__ == "__main__":
    main()
