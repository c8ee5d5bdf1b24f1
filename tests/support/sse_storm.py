"""A reconnect storm: many SSE clients opening one job's log stream at the same instant.

What every browser does after a web process restarts. Each client is a raw asyncio connection
(1,000s of them fit in one loop, httpx's per-chunk cost would not) that records how its
stream went: opened (and when), refused (status, ``detail``, ``Retry-After``), or cut (the
server ended the body before the client left and before the job's ``end`` event).
Used by tests/reliability/test_reconnect_storm.py and bench/bench_logs_storm.py.
"""

import asyncio
import contextlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

OPENED = b"event: stream-open"
ENDED = b"event: end"


@dataclass
class StormStream:
    status: int | None = None  # None: no HTTP answer at all
    opened_after: float | None = None  # seconds from the storm's start to the stream-open event
    detail: str = ""  # the JSON ``detail`` of a refusal
    retry_after: str | None = None
    ended: bool = False  # the server sent the job's ``end`` event
    cut: bool = False  # the body ended (or the connection broke) while the client still listened
    error: str = ""
    events: int = 0  # data events received after opening (lines flowed)
    first_lines_after: float | None = None  # seconds from the storm's start to the first ``logs`` event
    opened: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def outcome(self) -> str:
        if self.opened_after is not None:
            return "cut" if self.cut else "open"
        if self.status is None:
            return f"no answer ({self.error})"
        return f"{self.status} {self.detail}".strip()


async def open_stream(url: str, token: str, stream: StormStream, started: float) -> None:
    """Open one stream and read it until cancelled; everything that happens is written to ``stream``."""
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    request = (
        f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Token {token}\r\n"
        "Accept: text/event-stream\r\n\r\n"
    ).encode()
    writer = None
    try:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port, limit=1 << 22)
        writer.write(request)
        status_line = await reader.readline()
        if not status_line:
            raise ConnectionError("closed before answering")
        stream.status = int(status_line.split()[1])
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        headers = dict(line.split(": ", 1) for line in head.split("\r\n") if ": " in line)
        headers = {name.lower(): value for name, value in headers.items()}
        if stream.status != 200:
            stream.retry_after = headers.get("retry-after")
            length = int(headers.get("content-length") or 0)
            body = await reader.readexactly(length) if length else b""
            with contextlib.suppress(ValueError):
                stream.detail = json.loads(body).get("detail", "")
            return
        seen = b""
        while True:
            size_line = await reader.readline()
            if not size_line:
                raise ConnectionError("connection closed mid-body")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                if not stream.ended:
                    stream.cut = stream.opened_after is not None
                    stream.error = stream.error or "body ended before the job's end"
                return
            chunk = (await reader.readexactly(size + 2))[:-2]
            if stream.opened_after is None:
                seen += chunk
                if OPENED in seen:
                    stream.opened_after = time.monotonic() - started
                    stream.opened.set()
                    chunk, seen = seen.split(OPENED, 1)[1], b""
            if stream.opened_after is not None:
                stream.events += chunk.count(b"event: logs")
                if stream.events and stream.first_lines_after is None:
                    stream.first_lines_after = time.monotonic() - started
                if ENDED in chunk:
                    stream.ended = True
    except asyncio.CancelledError:
        raise  # the client left: not a cut
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError) as exc:
        stream.error = f"{type(exc).__name__}: {exc}"[:200]
        if stream.opened_after is not None and not stream.ended:
            stream.cut = True
    finally:
        stream.opened.set()  # whatever happened, the client is done opening
        if writer is not None:
            writer.close()


class Storm:
    """``clients`` streams of ``url`` opened at once, by the owners of ``tokens`` in turn."""

    def __init__(self, url: str, tokens: list[str], clients: int):
        self.url = url
        self.tokens = tokens
        self.streams = [StormStream() for _ in range(clients)]
        self.tasks: list[asyncio.Task] = []
        self.started = 0.0

    async def open_all(self, *, timeout: float) -> float:
        """Start every client at the same moment; returns the seconds until each had opened or failed."""
        self.started = time.monotonic()
        self.tasks = [
            asyncio.create_task(open_stream(self.url, self.tokens[n % len(self.tokens)], stream, self.started))
            for n, stream in enumerate(self.streams)
        ]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(stream.opened.wait() for stream in self.streams)), timeout)
        return time.monotonic() - self.started

    async def lines_reached_all(self, *, timeout: float) -> None:
        """Wait until every opened stream has received lines (its backlog), or ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(s.first_lines_after is not None or s.opened_after is None or s.cut for s in self.streams):
                return
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def summary(self) -> dict:
        opened = [stream.opened_after for stream in self.streams if stream.opened_after is not None]
        lines = [stream.first_lines_after for stream in self.streams if stream.first_lines_after is not None]
        refused = [stream for stream in self.streams if stream.opened_after is None]
        return {
            "clients": len(self.streams),
            "opened": len(opened),
            "opened_share": round(len(opened) / len(self.streams), 4),
            "seconds_until_all_open": round(max(opened), 2) if len(opened) == len(self.streams) else None,
            "open_seconds_p50": round(percentile(opened, 0.5), 2) if opened else None,
            "open_seconds_p99": round(percentile(opened, 0.99), 2) if opened else None,
            "seconds_until_all_have_lines": round(max(lines), 2) if opened and len(lines) == len(opened) else None,
            "cut": sum(stream.cut for stream in self.streams),
            "open_without_lines": sum(s.opened_after is not None and s.events == 0 for s in self.streams),
            "not_opened": dict(Counter(stream.outcome for stream in refused)),
            "retry_after_on_503": sorted({s.retry_after or "none" for s in refused if s.status == 503}),
        }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]
