"""Retention of job logs: finished jobs older than LOG_RETENTION_DAYS move from the table to one gzip object each.

The archive is written, read back and compared before any row is deleted.
"""

import gzip
import hashlib
import json
import logging
import tempfile
import zlib
from collections.abc import Iterator
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Max
from django.utils import timezone

from finetune_studio import keys, objects
from jobs.services import job_lock_for_log_lines

from .models import LogEntry, LogStream
from .services import log_stream_lock

logger = logging.getLogger(__name__)


class ArchiveVerificationFailed(Exception):
    """The archive read back from storage differs from the rows: they were kept."""


def archive_key(*, owner_id: int, job_id: int) -> str:
    return keys.user_key(owner_id, "jobs", str(job_id), "archive", "log.jsonl.gz")


def log_archive_due_job_ids() -> list[int]:
    """Finished jobs older than LOG_RETENTION_DAYS whose log still lives in the database."""
    from jobs.models import Job

    cutoff = timezone.now() - timedelta(days=settings.LOG_RETENTION_DAYS)
    jobs = Job.objects.filter(status__in=Job.FINISHED, finished_at__lt=cutoff, log_entries__isnull=False)
    return list(jobs.exclude(log_stream__archived_at__isnull=False).distinct().values_list("id", flat=True))


def log_archive_job(*, job_id: int) -> bool:
    """Move a long-finished job's log into one gzip JSON-lines object; returns whether it did.

    Order: write the object, read it back and compare (lines, last seq, SHA-256 of the
    content), then under the stream lock re-check that no line arrived meanwhile, mark the
    stream archived and delete the rows. Any failure before the delete keeps the rows.
    """
    from jobs.models import Job

    job = Job.objects.only("id", "owner_id", "status", "finished_at").get(id=job_id)
    cutoff = timezone.now() - timedelta(days=settings.LOG_RETENTION_DAYS)
    if job.status not in Job.FINISHED or not job.finished_at or job.finished_at >= cutoff:
        return False
    if LogStream.objects.filter(job_id=job_id, archived_at__isnull=False).exists():
        return False
    key = archive_key(owner_id=job.owner_id, job_id=job_id)
    storage = objects.bucket("logs")
    with tempfile.TemporaryFile() as spool:
        count, last_seq, digest = _write_archive(job_id, spool)
        if count == 0:
            return False
        size = spool.tell()
        spool.seek(0)
        storage.upload(key, spool, content_type="application/gzip")
    read_count, read_last, read_digest = _verify_archive(key)
    if (read_count, read_last, read_digest) != (count, last_seq, digest):
        raise ArchiveVerificationFailed(
            f"{key}: read back {read_count} lines up to seq {read_last}, wrote {count} up to {last_seq}"
        )
    with transaction.atomic():
        job_lock_for_log_lines(job_id=job_id, with_metrics=False)
        log_stream_lock(job_id)
        now_rows = LogEntry.objects.filter(job_id=job_id).aggregate(lines=Count("id"), last=Max("seq"))
        if (now_rows["lines"], now_rows["last"]) != (count, last_seq):
            logger.warning("Job %s: lines arrived while archiving; the archive will be rewritten next run", job_id)
            return False
        LogStream.objects.filter(job_id=job_id).update(
            archived_at=timezone.now(), archive_key=key, archive_size=size, archive_sha256=digest
        )
        LogEntry.objects.filter(job_id=job_id).delete()
    logger.info("Job %s: archived %d log lines to logs/%s (%d bytes)", job_id, count, key, size)
    return True


def archive_record(seq: int, timestamp: datetime, level: str, message: str, source: str) -> bytes:
    return (
        json.dumps(
            {"seq": seq, "timestamp": timestamp.isoformat(), "level": level, "message": message, "source": source},
            separators=(",", ":"),
        )
        + "\n"
    ).encode()


def _write_archive(job_id: int, spool) -> tuple[int, int, str]:
    digest = hashlib.sha256()
    count = 0
    last_seq = 0
    with gzip.GzipFile(fileobj=spool, mode="wb", compresslevel=6) as archive:
        while True:
            page = list(
                LogEntry.objects.filter(job_id=job_id, seq__gt=last_seq)
                .order_by("seq")
                .values_list("seq", "timestamp", "level", "message", "source")[:5000]
            )
            if not page:
                break
            for row in page:
                record = archive_record(*row)
                digest.update(record)
                archive.write(record)
            count += len(page)
            last_seq = page[-1][0]
    spool.seek(0, 2)
    return count, last_seq, digest.hexdigest()


def iter_archive_records(key: str) -> Iterator[bytes]:
    """The JSON lines of an archive, decompressed as it streams from storage."""
    decompressor = zlib.decompressobj(wbits=31)
    pending = b""
    for chunk in objects.bucket("logs").iter_chunks(key):
        pending += decompressor.decompress(chunk)
        *complete, pending = pending.split(b"\n")
        for record in complete:
            yield record + b"\n"
    pending += decompressor.flush()
    if pending:
        yield pending


def _verify_archive(key: str) -> tuple[int, int, str]:
    digest = hashlib.sha256()
    count = 0
    last_seq = 0
    for record in iter_archive_records(key):
        digest.update(record)
        count += 1
        last_seq = json.loads(record)["seq"]
    return count, last_seq, digest.hexdigest()
