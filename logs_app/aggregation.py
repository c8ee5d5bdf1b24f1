"""Aggregation of the log objects external trainers write (``users/<owner>/jobs/<id>/logs/*``) into the job's log.

Beat runs ``log_objects_aggregate_all`` (tasks); each new complete line goes through ``services.log_lines_append``.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from finetune_studio import keys, objects

from .models import LogCursor
from .services import log_lines_append

logger = logging.getLogger(__name__)


def job_log_prefix(*, owner_id: int, job_id: int) -> str:
    return keys.user_key(owner_id, "jobs", str(job_id), "logs") + "/"


def log_objects_aggregate(*, job_id: int) -> int:
    """Read new complete lines from every log object of an external job; returns lines ingested.

    Per object, a ``LogCursor`` holds the byte offset of the first unread line. The cursor row
    is locked (a concurrent run skips it), the bytes after it are read, complete lines are
    appended and the cursor advanced in the same transaction: a crash or a second run can
    neither lose nor repeat a line. A trailing partial line waits for its newline, unless the
    job finished more than LOG_AGGREGATION_SETTLE_SECONDS ago (nobody will complete it).
    """
    from jobs.models import Job

    job = Job.objects.only("id", "owner_id", "status", "finished_at").get(id=job_id)
    settled = bool(
        job.finished_at
        and job.finished_at < timezone.now() - timedelta(seconds=settings.LOG_AGGREGATION_SETTLE_SECONDS)
    )
    storage = objects.bucket("logs")
    prefix = job_log_prefix(owner_id=job.owner_id, job_id=job.id)
    offsets = dict(LogCursor.objects.filter(job_id=job_id).values_list("key", "offset"))
    total = 0
    for info in sorted(storage.list(prefix), key=lambda item: item.key):
        if info.size > offsets.get(info.key, 0):
            lines, busy = _aggregate_object(job_id, info.key, settled=settled)
            total += lines
            if busy:
                # Another run is reading this job: it goes on in key order; jumping ahead would reorder lines.
                break
    return total


def _aggregate_object(job_id: int, key: str, *, settled: bool) -> tuple[int, bool]:
    """(lines ingested, whether another run holds the object)."""
    LogCursor.objects.get_or_create(job_id=job_id, key=key)
    window = settings.LOG_AGGREGATION_MAX_BYTES
    total = 0
    while True:
        with transaction.atomic():
            cursor = LogCursor.objects.select_for_update(skip_locked=True).filter(job_id=job_id, key=key).first()
            if cursor is None:
                return total, True
            data = _read_window(key, cursor.offset, window)
            consumed, messages = _complete_lines(data, final=settled, window_full=len(data) >= window)
            if consumed == 0:
                return total, False
            if messages:
                log_lines_append(job_id=job_id, lines=[{"message": text} for text in messages], source="trainer")
            LogCursor.objects.filter(pk=cursor.pk).update(
                offset=cursor.offset + consumed, lines_read=cursor.lines_read + len(messages), updated_at=timezone.now()
            )
        total += len(messages)
        if len(data) < window:
            return total, False


def _read_window(key: str, start: int, window: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    chunks = objects.bucket("logs").iter_chunks(key, start=start, chunk_size=min(window, objects.CHUNK_SIZE))
    for chunk in chunks:
        parts.append(chunk)
        size += len(chunk)
        if size >= window:
            break
    close = getattr(chunks, "close", None)
    if close:
        close()
    return b"".join(parts)[:window]


def _complete_lines(data: bytes, *, final: bool, window_full: bool) -> tuple[int, list[str]]:
    """(bytes consumed, messages) for the complete lines of ``data``; blank lines are skipped."""
    end = data.rfind(b"\n") + 1
    if final or (end == 0 and window_full):
        # A finished writer's last line, or a line longer than the window: take what is there.
        end = len(data)
    messages = []
    for raw in data[:end].split(b"\n"):
        text = raw.rstrip(b"\r").decode("utf-8", errors="replace")
        if text.strip():
            messages.append(text)
    return end, messages


def log_aggregation_job_ids() -> list[int]:
    """External jobs whose log objects may still grow: unfinished, or finished within the grace period."""
    from jobs.models import Job, Trainer

    recent = timezone.now() - timedelta(seconds=settings.LOG_AGGREGATION_GRACE_SECONDS)
    jobs = Job.objects.filter(trainer__name=Trainer.EXTERNAL).filter(
        Q(status__in=(Job.Status.QUEUED, Job.Status.RUNNING)) | Q(finished_at__gte=recent)
    )
    return list(jobs.exclude(log_stream__archived_at__isnull=False).values_list("id", flat=True))
