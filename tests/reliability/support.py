"""A private redis-server for fault tests: SIGSTOP freezes it without touching the shared one on 6379."""

import contextlib
import os
import signal
import subprocess
import time

import redis

from tests.support.processes import free_port


@contextlib.contextmanager
def private_redis():
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(redis.RedisError):
                if redis.Redis.from_url(url, socket_timeout=0.5).ping():
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("private redis-server did not start")
            time.sleep(0.05)
        yield PrivateRedis(process, url)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGCONT)
        process.terminate()
        process.wait(timeout=10)


class PrivateRedis:
    def __init__(self, process: subprocess.Popen, url: str):
        self.process = process
        self.url = url
        self.stops = 0

    def stop(self) -> None:
        self.stops += 1
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)
