"""Reads of job logs, permission-aware, from the table or (after retention) from the archive object."""

import json
from collections import deque
from collections.abc import Iterator
from datetime import datetime
from typing import NamedTuple

from django.db.models import Count, Q, Sum

from .filters import NO_FILTER, LogFilter
from .models import LogEntry, LogStream
from .parsing import format_line
from .retention import iter_archive_records

_FIELDS = ("seq", "timestamp", "level", "message", "source")


class LogTotals(NamedTuple):
    archived_size: int
    archives: int
    lines: int


def log_totals(*, user) -> LogTotals:
    """Bytes of archived logs, how many, and lines still in the table, over the jobs the user sees: one query."""
    from jobs.selectors import jobs_visible

    totals = LogStream.objects.filter(job__in=jobs_visible(user=user)).aggregate(
        archived=Sum("archive_size"),
        archives=Count("job", filter=Q(archived_at__isnull=False)),
        lines=Sum("line_count"),
    )
    return LogTotals(archived_size=totals["archived"] or 0, archives=totals["archives"], lines=totals["lines"] or 0)


def log_stream_of(job_id: int) -> LogStream | None:
    return LogStream.objects.filter(job_id=job_id).first()


def log_lines(
    job_id: int,
    *,
    after: int = 0,
    before: int | None = None,
    limit: int = 500,
    filters: LogFilter = NO_FILTER,
    stream: LogStream | None = None,
) -> list[dict]:
    """Up to ``limit`` lines in seq order: the first ones after ``after``, or, with ``before``, the last ones before it.

    Keyset by seq (the (job, seq) index), never OFFSET. Timestamps stay datetimes.
    """
    stream = stream if stream is not None else log_stream_of(job_id)
    if stream is not None and stream.is_archived:
        return _archived_lines(stream, after=after, before=before, limit=limit, filters=filters)
    rows = LogEntry.objects.filter(job_id=job_id, seq__gt=after).filter(filters.as_q())
    if before is not None:
        rows = rows.filter(seq__lt=before).order_by("-seq")
        return list(reversed(rows.values(*_FIELDS)[:limit]))
    return list(rows.order_by("seq").values(*_FIELDS)[:limit])


def iter_archive_lines(stream: LogStream) -> Iterator[dict]:
    from django.utils.dateparse import parse_datetime

    for record in iter_archive_records(stream.archive_key):
        line = json.loads(record)
        line["timestamp"] = parse_datetime(line["timestamp"])
        yield line


def _archived_lines(stream: LogStream, *, after: int, before: int | None, limit: int, filters: LogFilter) -> list[dict]:
    if before is not None:
        tail: deque = deque(maxlen=limit)
        for line in iter_archive_lines(stream):
            if line["seq"] >= before:
                break
            if line["seq"] > after and filters.matches(line):
                tail.append(line)
        return list(tail)
    found = []
    for line in iter_archive_lines(stream):
        if line["seq"] > after and filters.matches(line):
            found.append(line)
            if len(found) >= limit:
                break
    return found


def log_backlog_start(job_id: int, lines: int, *, stream: LogStream | None = None) -> int:
    """The seq after which the last ``lines`` lines of the job begin (0 when it has fewer)."""
    stream = stream if stream is not None else log_stream_of(job_id)
    if stream is None:
        return 0
    if lines <= 0:
        return stream.last_seq
    if stream.is_archived:
        recent: deque = deque(maxlen=lines + 1)
        for line in iter_archive_lines(stream):
            recent.append(line["seq"])
        return recent[0] if len(recent) > lines else 0
    seqs = LogEntry.objects.filter(job_id=job_id).order_by("-seq").values_list("seq", flat=True)
    found = list(seqs[lines : lines + 1])
    return found[0] if found else 0


def iter_log_text(job_id: int, *, page_size: int = 5000) -> Iterator[str]:
    """The whole log in the text form, as chunks of many lines (one query per page)."""
    stream = log_stream_of(job_id)
    if stream is not None and stream.is_archived:
        buffer = []
        for line in iter_archive_lines(stream):
            buffer.append(format_line(line["timestamp"], line["level"], line["message"]) + "\n")
            if len(buffer) >= page_size:
                yield "".join(buffer)
                buffer = []
        if buffer:
            yield "".join(buffer)
        return
    after = 0
    while True:
        page = list(
            LogEntry.objects.filter(job_id=job_id, seq__gt=after)
            .order_by("seq")
            .values_list("seq", "timestamp", "level", "message")[:page_size]
        )
        if not page:
            return
        yield "".join(format_line(stamp, level, message) + "\n" for _, stamp, level, message in page)
        after = page[-1][0]


def serialize_line(line: dict) -> dict:
    stamp = line["timestamp"]
    return {**line, "timestamp": stamp.isoformat() if isinstance(stamp, datetime) else stamp}
