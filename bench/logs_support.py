"""Shared setup of the live-log benchmarks (bench/bench_logs_*.py): production topology on loopback.

A fresh PostgreSQL database (``bench_logs``) migrated by ``manage.py migrate``, Redis for the
fan-out, uvicorn web processes and separate emitting processes that call ``log_lines_append``.
Emitters put their send time into each message so clients measure emit → client latency.
"""

import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PG = "postgres://postgres@127.0.0.1:5432"
DATABASE = "bench_logs"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
_LOGS_RANGE = re.compile(rb'^\{"prev_seq":(\d+),"last_seq":(\d+)[,}]')


def service_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO_SETTINGS_MODULE"))}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "finetune_studio.settings",
            "DATABASE_URL": f"{PG}/{DATABASE}",
            "REDIS_URL": REDIS_URL,
            "SECRET_KEY": "bench-secret-key-" + "x" * 40,
            "STORAGE_BACKEND": "local",
            "LOCAL_STORAGE_ROOT": str(Path(tempfile.gettempdir()) / "bench_logs_storage"),
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "LOG_LEVEL": "WARNING",
            "STATIC_MANIFEST": "false",
            "PYTHONUNBUFFERED": "1",
            "DB_POOL_MAX_SIZE": "20",
        }
    )
    env.update(extra)
    return env


def recreate_database() -> None:
    from bench.service_support import recreate_database as fresh_database

    fresh_database(DATABASE, migrate_with=service_env())


def manage(*args: str, env: dict | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env or service_env(),
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return result.stdout


def create_jobs(count: int) -> tuple[str, list[int]]:
    """A user with an API token and ``count`` running jobs; returns (token, job ids)."""
    code = (
        "import json\n"
        "from django.contrib.auth import get_user_model\n"
        "from rest_framework.authtoken.models import Token\n"
        "from jobs.models import Job, Trainer\n"
        "user, _ = get_user_model().objects.get_or_create(username='bench')\n"
        "token, _ = Token.objects.get_or_create(user=user)\n"
        "trainer, _ = Trainer.objects.get_or_create(name='external')\n"
        f"ids = [Job.objects.create(owner=user, name='bench', base_model='b', trainer=trainer, status='running').id"
        f" for _ in range({count})]\n"
        "print(json.dumps({'token': token.key, 'ids': ids}))\n"
    )
    out = json.loads(manage("shell", "-c", code).strip().splitlines()[-1])
    return out["token"], out["ids"]


def start_emitter(job_id: int, *, rate: float, lines_per_batch: int, duration: float, mode: str = "append"):
    """A separate process writing ``rate`` batches/s (0 = as fast as possible) through log_lines_append."""
    command = [sys.executable, "-m", "bench.logs_support", "emit", str(job_id), str(rate)]
    command += [str(lines_per_batch), str(duration), mode]
    return subprocess.Popen(command, cwd=ROOT, env=service_env(), stdout=subprocess.PIPE, text=True)


def _emit(job_id: int, rate: float, lines_per_batch: int, duration: float, mode: str) -> None:
    import django

    django.setup()
    from django.utils import timezone

    from logs_app.models import LogEntry
    from logs_app.services import log_lines_append

    start = time.monotonic()
    sent = 0
    batches = 0
    seq = 0
    write_ms: list[float] = []
    while time.monotonic() - start < duration:
        stamp = f"{time.time():.6f}"
        began = time.monotonic()
        if mode == "append":
            log_lines_append(job_id=job_id, lines=[{"message": f"t={stamp} n={n}"} for n in range(lines_per_batch)])
        else:  # the baseline: Django's bulk_create, what a plain ORM write path would do
            now = timezone.now()
            LogEntry.objects.bulk_create(
                [
                    LogEntry(job_id=job_id, seq=seq + n + 1, timestamp=now, level="INFO", message=f"t={stamp} n={n}")
                    for n in range(lines_per_batch)
                ]
            )
            seq += lines_per_batch
        write_ms.append(1000 * (time.monotonic() - began))
        sent += lines_per_batch
        batches += 1
        if rate:
            pause = start + batches / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
    slow = [(n, round(ms)) for n, ms in enumerate(write_ms) if ms > 100]
    print(json.dumps({"lines": sent, "seconds": time.monotonic() - start, "write_ms_max": max(write_ms), "slow": slow}))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class SseClient:
    """One EventSource-like client on a raw asyncio connection: keeps Last-Event-ID, records seqs and latencies.

    Not httpx: with 1,000 streams in one asyncio loop, httpx's per-chunk work cost the load
    generator about as much CPU as the server under test spent, on the same two cores. This
    client speaks just what a stream needs (HTTP/1.1 GET, chunked body) and parses SSE itself.
    """

    def __init__(self, http, url: str, token: str, *, ranges_only: bool = False):
        self.http = http
        self.url = url
        self.token = token
        # Throughput runs: check each event's declared range and line count instead of parsing every
        # line (parsing 10 × 50,000 lines/s took the load generator a whole core of the two).
        self.ranges_only = ranges_only
        self.last_event_id: str | None = None
        self.seqs: list[int] = []
        self.latencies: list[float] = []
        self.connected = asyncio.Event()
        self.drops = 0

    async def run(self, *, drop_after: tuple[float, float] | None = None) -> None:
        """Stream until cancelled; with ``drop_after`` (min, max seconds) drop and resume at random."""
        import random

        while True:
            limit = random.uniform(*drop_after) if drop_after else None
            try:
                await asyncio.wait_for(self._once(), limit)
            except TimeoutError:
                self.drops += 1
            except asyncio.CancelledError:
                raise
            except Exception:
                await asyncio.sleep(0.2)

    async def _once(self) -> None:
        from urllib.parse import urlsplit

        url = urlsplit(self.url)
        # The benchmark jobs start empty, before the clients: "everything after seq 0" is every line.
        target = url.path if self.last_event_id else url.path + "?after=0"
        head = [
            f"GET {target} HTTP/1.1",
            f"Host: {url.netloc}",
            f"Authorization: Token {self.token}",
            "Accept: text/event-stream",
        ]
        if self.last_event_id:
            head.append(f"Last-Event-ID: {self.last_event_id}")
        reader, writer = await asyncio.open_connection(url.hostname, url.port, limit=1 << 22)
        try:
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
            status = await reader.readline()
            if b" 200 " not in status:
                raise ConnectionError(status.decode(errors="replace").strip())
            headers = (await reader.readuntil(b"\r\n\r\n")).lower()
            if b"transfer-encoding: chunked" not in headers:
                raise ConnectionError("expected a chunked event stream")
            self.connected.set()
            buffer = b""
            while True:
                size = int((await reader.readline()).split(b";")[0], 16)
                if size == 0:
                    return
                chunk = (await reader.readexactly(size + 2))[:-2]
                now = time.time()
                buffer += chunk
                if b"\n\n" in buffer:
                    *blocks, buffer = buffer.split(b"\n\n")
                    for block in blocks:
                        self._handle(block, now)
        finally:
            writer.close()

    def _handle(self, block: bytes, now: float) -> None:
        event_type = event_id = data = None
        for line in block.split(b"\n"):
            if line.startswith(b"event: "):
                event_type = line[7:]
            elif line.startswith(b"id: "):
                event_id = line[4:].decode()
            elif line.startswith(b"data: "):
                data = line[6:]
        if event_type != b"logs" or data is None:
            return
        if self.ranges_only:
            covered = _LOGS_RANGE.match(data)
            previous, last = int(covered[1]), int(covered[2])
            whole = data.count(b'{"seq":') == last - previous and previous == (self.seqs[-1] if self.seqs else previous)
            self.seqs.extend(range(previous + 1, last + 1) if whole else [-1])
            self.last_event_id = event_id
            return
        for line in json.loads(data)["lines"]:
            self.seqs.append(line["seq"])
            sent_at = float(line["message"].split(" ", 1)[0][2:])
            self.latencies.append((now - sent_at) * 1000)
        self.last_event_id = event_id

    def exact(self, last_seq: int) -> bool:
        return self.seqs == list(range(1, last_seq + 1))

    def caught_up(self, last_seq: int) -> bool:
        return bool(self.seqs) and self.seqs[-1] >= last_seq


async def stream_clients(base_url: str, job_id: int, token: str, count: int, *, drop_after=None, ranges_only=False):
    """``count`` clients connected (waits until each has its stream open); returns (None, clients, tasks)."""
    url = f"{base_url}/api/v1/jobs/{job_id}/logs"
    clients = [SseClient(None, url, token, ranges_only=ranges_only) for _ in range(count)]
    tasks = []
    for start in range(0, count, 50):  # connect in waves: 1,000 at once would queue in the accept backlog
        for client in clients[start : start + 50]:
            tasks.append(asyncio.create_task(client.run(drop_after=drop_after)))
        waves = asyncio.gather(*(client.connected.wait() for client in clients[start : start + 50]))
        await asyncio.wait_for(waves, 60)
    return None, clients, tasks


async def wait_caught_up(clients, last_seq: int, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(client.caught_up(last_seq) for client in clients):
        await asyncio.sleep(0.1)
    return max(0.0, deadline - time.monotonic())


async def stop(http, tasks) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if http is not None:
        await http.aclose()


if __name__ == "__main__" and sys.argv[1:2] == ["emit"]:
    sys.path.insert(0, str(ROOT))
    job, rate, per_batch, seconds, how = sys.argv[2:7]
    _emit(int(job), float(rate), int(per_batch), float(seconds), how)
