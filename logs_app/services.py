"""The one write path of job logs: ingestion (runner batches, the API, log objects) and the end of a stream.

Aggregation of log objects is in ``aggregation``, retention in ``retention``.

Every way in goes through ``log_lines_append``: lines are cleaned, get the next
sequence numbers of their job, are inserted in bulk, and after commit the batch is
published as one event on ``job-<id>`` (event id = the batch's last seq).
"""

import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

import orjson
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from finetune_studio.errors import DomainConflict
from jobs.services import job_lock_for_log_lines, job_metrics_record

from .events import publish_log_event
from .models import LogEntry, LogStream
from .parsing import InvalidLine, metric_point, normalize_level, parse_text_fields, parse_timestamp

logger = logging.getLogger(__name__)

MAX_SEQ = 2**63 - 1
_COPY_THRESHOLD = 200
_SOURCE_MAX = LogEntry._meta.get_field("source").max_length
# One statement per batch, whatever its size: arrays in, ON CONFLICT for lines whose seq the client chose.
_UNNEST_INSERT = (
    "INSERT INTO log_entries (job_id, seq, timestamp, level, message, source, created_at)"
    " SELECT %s, u.seq, u.ts, u.level, u.message, u.source, %s"
    " FROM unnest(%s::bigint[], %s::timestamptz[], %s::varchar[], %s::text[], %s::varchar[])"
    " AS u(seq, ts, level, message, source)"
    " ON CONFLICT (job_id, seq) DO NOTHING"
)
_UNNEST_INSERT_RETURNING = _UNNEST_INSERT + " RETURNING seq"


class LogsConflict(DomainConflict):
    """The job's log is not in a state that allows this."""


class LogsArchived(LogsConflict):
    """The job's log was archived (retention): its rows are in storage and no line may be added."""


@dataclass
class AppendResult:
    received: int
    inserted: int
    last_seq: int
    lines: list[dict] = field(default_factory=list)


class _Line(NamedTuple):
    # A tuple, not a dataclass: built once per line of every batch, and tuples are the cheapest to build.
    seq: int | None
    timestamp: datetime
    level: str
    message: str
    source: str


# --- Ingestion ------------------------------------------------------------------------------------


def clean_lines(lines: Iterable, *, source: str = "", now: datetime | None = None, strict: bool = False) -> list[_Line]:
    """Validate and normalise a batch. Raises ``InvalidLine`` naming the line (0-based) and the reason.

    A line without a level is read in its text form (``[12:00:01] [WARN] …`` and kin) for its
    level and time. ``strict`` (the API) refuses an over-long message instead of cutting it.
    """
    now = now or timezone.now()
    default_source = (source or "")[:_SOURCE_MAX]
    max_chars = settings.LOG_MAX_MESSAGE_CHARS
    cleaned: list[_Line] = []
    seen: set[int] = set()
    for index, line in enumerate(lines):
        try:
            cleaned.append(_clean_line(line, default_source, now, max_chars, strict, seen))
        except InvalidLine as exc:
            raise InvalidLine(f"line {index}: {exc}") from None
    return cleaned


def _clean_line(line, default_source: str, now: datetime, max_chars: int, strict: bool, seen: set[int]) -> _Line:
    if isinstance(line, str):
        line = {"message": line}
    if not isinstance(line, dict):
        raise InvalidLine("must be a string or an object with a message")
    message = line.get("message")
    if not isinstance(message, str):
        raise InvalidLine("message is missing or not a string")
    # PostgreSQL text cannot hold NUL; a stray byte must not cost the whole batch.
    message = message.replace("\x00", "\ufffd")
    raw_level = line.get("level")
    timestamp = None
    if raw_level is None or raw_level == "":
        message, level, timestamp = parse_text_fields(message, now=now)
        level = level or LogEntry.Level.INFO
    else:
        level = normalize_level(raw_level)
        if level is None:
            raise InvalidLine(f"unknown level {raw_level!r} (use DEBUG, INFO, WARN or ERROR)")
    if line.get("timestamp") not in (None, ""):
        timestamp = parse_timestamp(line["timestamp"])
    if len(message) > max_chars:
        if strict:
            raise InvalidLine(f"message is longer than {max_chars} characters")
        message = message[:max_chars] + f" … [{len(message) - max_chars} characters cut]"
    seq = line.get("seq")
    if seq is not None:
        if isinstance(seq, bool) or not isinstance(seq, int) or not 1 <= seq <= MAX_SEQ:
            raise InvalidLine(f"seq must be a whole number from 1 to {MAX_SEQ}")
        if seq in seen:
            raise InvalidLine(f"seq {seq} appears twice in the batch")
        seen.add(seq)
    line_source = line.get("source")
    if line_source is not None:
        if not isinstance(line_source, str):
            raise InvalidLine("source must be a string")
        line_source = line_source.replace("\x00", "\ufffd")
    return _Line(
        seq=seq,
        timestamp=timestamp or now,
        level=level,
        message=message,
        source=(line_source or default_source)[:_SOURCE_MAX],
    )


def log_lines_append(*, job_id: int, lines: list[dict], source: str = "") -> AppendResult:
    """Persist a batch of lines of a job, then (after commit) publish them as one ``logs`` event.

    Lines without ``seq`` get the job's next numbers. Lines with ``seq`` are idempotent: one
    already stored is skipped, so a replayed batch adds nothing. The job's ``LogStream`` row
    is locked until commit, so concurrent writers to one job get disjoint increasing ranges.
    The job row is locked first (``jobs.services.job_lock_for_log_lines``), then the stream row.
    JSON metric lines are handed to ``jobs.services.job_metrics_record`` in the same transaction.
    Raises ``Job.DoesNotExist``, ``InvalidLine`` (nothing stored) or ``LogsArchived``.
    """
    cleaned = lines if lines and isinstance(lines[0], _Line) else clean_lines(lines, source=source)
    if not cleaned:
        return AppendResult(received=0, inserted=0, last_seq=_current_last_seq(job_id))
    metrics = {index: point for index, line in enumerate(cleaned) if (point := metric_point(line.message)) is not None}
    with transaction.atomic():
        job_lock_for_log_lines(job_id=job_id, with_metrics=bool(metrics))
        previous, archived = log_stream_lock(job_id)
        if archived:
            raise LogsArchived(f"the log of job #{job_id} is archived; no line can be added")
        given = [line.seq for line in cleaned if line.seq is not None]
        base = max([previous, *given])
        fresh = sum(1 for line in cleaned if line.seq is None)
        next_seq = base
        if given:
            rows = []
            for line in cleaned:
                seq = line.seq
                if seq is None:
                    next_seq += 1
                    seq = next_seq
                rows.append((seq, line))
        else:
            rows = list(zip(range(base + 1, base + 1 + len(cleaned)), cleaned, strict=True))
        last_seq = base + fresh
        inserted = _insert_rows(job_id, rows, may_conflict=bool(given))
        dicts: list[dict] = []
        if inserted:
            totals = _update_stream(job_id, last_seq, inserted)
            if metrics:
                index_of = {id(line): index for index, line in enumerate(cleaned)}
                points = [metrics[i] for _, line in inserted if (i := index_of[id(line)]) in metrics]
                if points:
                    job_metrics_record(job_id=job_id, points=points)
            dicts = _line_dicts(inserted)
            live = [line for line in dicts if line["seq"] > previous] if given else dicts
            if live:
                _publish_batch_on_commit(job_id, previous, live, totals)
    return AppendResult(received=len(cleaned), inserted=len(inserted), last_seq=last_seq, lines=dicts)


def _current_last_seq(job_id: int) -> int:
    return LogStream.objects.filter(job_id=job_id).values_list("last_seq", flat=True).first() or 0


def log_stream_lock(job_id: int) -> tuple[int, bool]:
    """The stream row, locked until commit (created on the first batch): (last_seq, archived).

    Take it after the job row (``jobs.services.job_lock_for_log_lines``): the one lock order of the logs."""
    suffix = " FOR UPDATE" if connection.vendor == "postgresql" else ""
    select = f"SELECT last_seq, archived_at FROM log_streams WHERE job_id = %s{suffix}"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(select, [job_id])
        row = cursor.fetchone()
        if row is None:
            cursor.execute(
                "INSERT INTO log_streams (job_id, last_seq, line_count, warn_count, error_count, archive_key,"
                " archive_size, archive_sha256, updated_at) VALUES (%s, 0, 0, 0, 0, '', 0, '', %s)"
                " ON CONFLICT (job_id) DO NOTHING",
                [job_id, timezone.now()],
            )
            cursor.execute(select, [job_id])
            row = cursor.fetchone()
    return int(row[0]), row[1] is not None


def _insert_rows(job_id: int, rows: list[tuple[int, _Line]], *, may_conflict: bool) -> list[tuple[int, _Line]]:
    """Insert in one statement (COPY for big fresh batches); returns the rows actually inserted."""
    now = timezone.now()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            if not may_conflict and len(rows) >= _COPY_THRESHOLD:
                # Fresh numbers above the locked counter cannot collide: COPY, the fastest way in.
                copy_sql = "COPY log_entries (job_id, seq, timestamp, level, message, source, created_at) FROM STDIN"
                with cursor.cursor.copy(copy_sql) as copy:
                    for block in _copy_text(job_id, rows, now):
                        copy.write(block)
                return rows
            cursor.execute(
                _UNNEST_INSERT_RETURNING if may_conflict else _UNNEST_INSERT,
                [
                    job_id,
                    now,
                    [seq for seq, _ in rows],
                    [line.timestamp for _, line in rows],
                    [line.level for _, line in rows],
                    [line.message for _, line in rows],
                    [line.source for _, line in rows],
                ],
            )
            if not may_conflict:
                return rows
            stored = {seq for (seq,) in cursor.fetchall()}
        return sorted((row for row in rows if row[0] in stored), key=lambda row: row[0])
    # Other databases (SQLite in standalone mode): writers are serialised by the database lock.
    if may_conflict:
        wanted = [seq for seq, _ in rows]
        existing = set(LogEntry.objects.filter(job_id=job_id, seq__in=wanted).values_list("seq", flat=True))
        rows = [row for row in rows if row[0] not in existing]
    LogEntry.objects.bulk_create(
        [
            LogEntry(
                job_id=job_id,
                seq=seq,
                timestamp=line.timestamp,
                level=line.level,
                message=line.message,
                source=line.source,
                created_at=now,
            )
            for seq, line in rows
        ],
        batch_size=2000,
    )
    return sorted(rows, key=lambda row: row[0])


def _update_stream(job_id: int, last_seq: int, inserted: list[tuple[int, _Line]]) -> dict:
    """Move the counter and the totals; returns the new totals (line_count, warn_count, error_count)."""
    warns = sum(1 for _, line in inserted if line.level == LogEntry.Level.WARN)
    errors = sum(1 for _, line in inserted if line.level == LogEntry.Level.ERROR)
    update = (
        "UPDATE log_streams SET last_seq = %s, line_count = line_count + %s, warn_count = warn_count + %s,"
        " error_count = error_count + %s, updated_at = %s WHERE job_id = %s"
    )
    totals = "SELECT line_count, warn_count, error_count FROM log_streams WHERE job_id = %s"
    with connection.cursor() as cursor:
        values = [last_seq, len(inserted), warns, errors, timezone.now(), job_id]
        if connection.vendor == "postgresql":
            cursor.execute(update + " RETURNING line_count, warn_count, error_count", values)
        else:  # SQLite has RETURNING only from 3.35
            cursor.execute(update, values)
            cursor.execute(totals, [job_id])
        line_count, warn_count, error_count = cursor.fetchone()
    return {"line_count": line_count, "warn_count": warn_count, "error_count": error_count}


_COPY_ROWS_PER_WRITE = 2000


def _copy_text(job_id: int, rows: list[tuple[int, _Line]], now: datetime) -> Iterator[bytes]:
    """The rows in COPY's text format, a few thousand per block: whole columns escaped at once.

    psycopg's ``write_row`` converts value by value in Python, which cost more than the
    database's own work on big batches. Here each text column is joined, escaped by four C-level
    ``str.replace`` calls and split again; timestamps go as ISO 8601 text, which timestamptz reads.
    """
    job = str(job_id)
    created = now.isoformat()
    for start in range(0, len(rows), _COPY_ROWS_PER_WRITE):
        block = rows[start : start + _COPY_ROWS_PER_WRITE]
        stamps = _iso_stamps([line.timestamp for _, line in block])
        messages = _copy_escape([line.message for _, line in block])
        sources = _copy_escape([line.source for _, line in block])
        yield "".join(
            f"{job}\t{seq}\t{stamp}\t{line.level}\t{message}\t{source}\t{created}\n"
            for (seq, line), stamp, message, source in zip(block, stamps, messages, sources, strict=True)
        ).encode()


def _copy_escape(values: list[str]) -> list[str]:
    """Escape COPY text-format specials (backslash, newline, CR, tab) in many values at once."""
    # Cleaned lines hold no NUL (PostgreSQL text cannot), so NUL can join the values; should one
    # hold it anyway, escape value by value rather than split in the wrong places.
    blob = "\x00".join(values)
    if blob.count("\x00") != len(values) - 1:
        return [_copy_escape_one(value) for value in values]
    return _copy_escape_one(blob).split("\x00") if values else []


def _copy_escape_one(text: str) -> str:
    if "\\" in text:
        text = text.replace("\\", "\\\\")
    for special, escaped in (("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t")):
        if special in text:
            text = text.replace(special, escaped)
    return text


def _iso_stamps(stamps: list[datetime]) -> list[str]:
    """ISO 8601 text of each timestamp; a batch mostly shares one ``now``, formatted once."""
    out = []
    last = last_text = None
    for stamp in stamps:
        if stamp is not last:
            last, last_text = stamp, stamp.isoformat()
        out.append(last_text)
    return out


def _line_dicts(rows: list[tuple[int, _Line]]) -> list[dict]:
    stamps = _iso_stamps([line.timestamp for _, line in rows])
    return [
        {"seq": seq, "timestamp": stamp, "level": line.level, "message": line.message, "source": line.source}
        for (seq, line), stamp in zip(rows, stamps, strict=True)
    ]


def _publish_batch_on_commit(job_id: int, previous: int, live: list[dict], totals: dict) -> None:
    def publish() -> None:
        publish_log_event(job_id, "logs", encode_logs_event(previous, live, totals), live[-1]["seq"])

    transaction.on_commit(publish)


def encode_logs_event(previous: int, lines: list[dict], totals: dict | None) -> str:
    """A ``logs`` event's data. ``prev_seq`` comes first: the stream sequencer reads it without parsing the rest."""
    body = {"prev_seq": previous, "last_seq": lines[-1]["seq"], "lines": lines}
    if totals is not None:
        body["totals"] = {
            "lines": totals["line_count"],
            "warnings": totals["warn_count"],
            "errors": totals["error_count"],
        }
    return orjson.dumps(body).decode()


def log_stream_end(*, job_id: int, status: str) -> None:
    """Tell the job's live log streams that it finished: an ``end`` event after commit (id = last seq).

    Called on the jobs app's ``job_finished`` signal (``receivers``); streams send it and close.
    Streams opened later on a finished job end by themselves after the backlog.
    """

    def publish() -> None:
        last_seq = _current_last_seq(job_id)
        payload = json.dumps({"status": status, "last_seq": last_seq})
        publish_log_event(job_id, "end", payload, last_seq)

    transaction.on_commit(publish)
