"""Shared pieces of the fault tests: a private redis-server (SIGSTOP freezes it without touching the shared one on
6379) and a reader of streamed responses that a fault may cut."""

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


BIG = bytes(range(256)) * 8192  # 2 MiB


def read_stream(response) -> tuple[bytes, Exception | None]:
    """The body received, and the error that cut it (None when it arrived whole)."""
    received = bytearray()
    try:
        for chunk in response.streaming_content:
            received += chunk
    except Exception as exc:  # the server aborts the response: the client sees a cut connection
        return bytes(received), exc
    return bytes(received), None
