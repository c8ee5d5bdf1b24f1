import gzip
import json
import threading
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone

from finetune_studio.objects import StorageError, bucket
from logs_app import aggregation, retention
from logs_app.aggregation import job_log_prefix, log_objects_aggregate
from logs_app.models import LogCursor, LogEntry, LogStream
from logs_app.retention import log_archive_job
from logs_app.services import log_lines_append


@pytest.fixture
def external_job(make_job, alice):
    return make_job(alice, trainer="external")


def write(job, name: str, text: str) -> str:
    key = job_log_prefix(owner_id=job.owner_id, job_id=job.id) + name
    bucket("logs").put_bytes(key, text.encode())
    return key


def messages(job):
    return list(LogEntry.objects.filter(job=job).order_by("seq").values_list("message", flat=True))


def test_it_reads_complete_lines_and_holds_back_a_partial_one(external_job):
    key = write(external_job, "0001.log", "[10:00:00] [INFO] one\n[10:00:01] [WARN] two\nthr")
    assert log_objects_aggregate(job_id=external_job.id) == 2
    assert messages(external_job) == ["one", "two"]
    assert LogCursor.objects.get(job=external_job, key=key).offset == len(
        "[10:00:00] [INFO] one\n[10:00:01] [WARN] two\n"
    )
    # The trainer rewrites the object, longer: the rest of the line and a new one arrive.
    write(external_job, "0001.log", "[10:00:00] [INFO] one\n[10:00:01] [WARN] two\nthree\nfour\n")
    assert log_objects_aggregate(job_id=external_job.id) == 2
    assert log_objects_aggregate(job_id=external_job.id) == 0  # run twice: nothing repeated
    assert messages(external_job) == ["one", "two", "three", "four"]
    assert LogEntry.objects.get(job=external_job, message="two").level == "WARN"


def test_new_chunk_files_are_picked_up_in_name_order(external_job):
    write(external_job, "0002.log", "b1\n")
    write(external_job, "0001.log", "a1\na2\n")
    log_objects_aggregate(job_id=external_job.id)
    write(external_job, "0003.log", "c1\n")
    log_objects_aggregate(job_id=external_job.id)
    assert messages(external_job) == ["a1", "a2", "b1", "c1"]
    assert LogCursor.objects.filter(job=external_job).count() == 3


def test_a_run_that_dies_mid_file_is_resumed_without_loss_or_repeat(external_job, settings, storage_spy):
    settings.LOG_AGGREGATION_MAX_BYTES = 1024
    lines = [f"line {n:04d} " + "x" * 40 for n in range(100)]
    write(external_job, "0001.log", "\n".join(lines) + "\n")
    # Storage dies while the third window is read: each window's ranged GET streams the rest of the 5 kB
    # file (the reader stops after 1 kB), so the first two cost about 5.4 + 4.4 kB with their headers.
    storage_spy.die_after(storage_spy.bytes_back + 11_500)
    with pytest.raises(StorageError):
        log_objects_aggregate(job_id=external_job.id)
    done = len(messages(external_job))
    assert 0 < done < 100
    storage_spy.heal()
    log_objects_aggregate(job_id=external_job.id)
    assert messages(external_job) == lines


def test_a_finished_jobs_unterminated_last_line_is_taken_once_settled(make_job, alice, settings):
    settings.LOG_AGGREGATION_SETTLE_SECONDS = 60
    job = make_job(alice, trainer="external", status="succeeded")
    write(job, "0001.log", "done\nno newline")
    log_objects_aggregate(job_id=job.id)
    assert messages(job) == ["done"]
    job.finished_at = timezone.now() - timedelta(minutes=5)
    job.save(update_fields=["finished_at"])
    log_objects_aggregate(job_id=job.id)
    log_objects_aggregate(job_id=job.id)
    assert messages(job) == ["done", "no newline"]


def test_only_external_jobs_still_growing_are_aggregated(make_job, alice, external_job):
    make_job(alice)  # a local job: its runner ships lines directly
    make_job(alice, trainer="external", status="failed", finished_days_ago=3)
    assert aggregation.log_aggregation_job_ids() == [external_job.id]


@pytest.mark.postgres
def test_two_concurrent_runs_never_duplicate_a_line(transactional_db, make_job, alice, settings):
    settings.LOG_AGGREGATION_MAX_BYTES = 2048
    job = make_job(alice, trainer="external")
    lines = [f"line {n}" for n in range(2000)]
    write(job, "0001.log", "\n".join(lines[:1000]) + "\n")
    write(job, "0002.log", "\n".join(lines[1000:]) + "\n")
    errors = []

    def run():
        try:
            log_objects_aggregate(job_id=job.id)
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    log_objects_aggregate(job_id=job.id)  # whatever a skipped run left, the next tick takes
    assert errors == []
    assert messages(job) == lines


# --- Retention ------------------------------------------------------------------------------------


@pytest.fixture
def old_job(make_job, alice, settings):
    settings.LOG_RETENTION_DAYS = 30
    job = make_job(alice, status="succeeded", finished_days_ago=31)
    log_lines_append(
        job_id=job.id, lines=[{"message": f"m{n}", "level": "WARN" if n % 5 else "INFO"} for n in range(50)]
    )
    return job


def test_old_logs_are_archived_to_one_gzip_object_then_deleted(old_job, make_job, alice):
    recent = make_job(alice, status="succeeded", finished_days_ago=29)
    log_lines_append(job_id=recent.id, lines=["keep me"])
    assert retention.log_archive_due_job_ids() == [old_job.id]
    assert log_archive_job(job_id=old_job.id) is True
    assert not LogEntry.objects.filter(job=old_job).exists()
    stream = LogStream.objects.get(job=old_job)
    key = f"users/{old_job.owner_id}/jobs/{old_job.id}/archive/log.jsonl.gz"
    assert stream.archive_key == key and stream.is_archived and stream.line_count == 50
    records = [json.loads(line) for line in gzip.decompress(bucket("logs").read_bytes(key)).splitlines()]
    assert [record["seq"] for record in records] == list(range(1, 51))
    assert records[1]["level"] == "WARN" and records[1]["message"] == "m1"
    assert log_archive_job(job_id=recent.id) is False
    assert LogEntry.objects.filter(job=recent).count() == 1
    assert retention.log_archive_due_job_ids() == []


def test_archived_logs_still_serve_history_download_and_replay(old_job, alice_api):
    log_archive_job(job_id=old_job.id)
    page = alice_api.get(f"/api/v1/jobs/{old_job.id}/logs", {"format": "json", "after": 10, "limit": 5}).json()
    assert page["archived"] and [line["seq"] for line in page["results"]] == [11, 12, 13, 14, 15]
    assert page["has_more"]
    warn = alice_api.get(f"/api/v1/jobs/{old_job.id}/logs", {"format": "json", "level": "INFO", "q": "m4"}).json()
    assert [line["message"] for line in warn["results"]] == ["m40", "m45"]
    older = alice_api.get(f"/api/v1/jobs/{old_job.id}/logs", {"format": "json", "before": 3}).json()
    assert [line["seq"] for line in older["results"]] == [1, 2]
    text = b"".join(alice_api.get(f"/api/v1/jobs/{old_job.id}/logs.txt").streaming_content).decode()
    assert text.count("\n") == 50 and text.splitlines()[1].endswith("[WARN] m1")
    from logs_app.streaming import replay_page

    from .sse import SseParser

    events = SseParser().feed(replay_page(old_job.id, 45).body)
    assert [event.type for event in events] == ["logs", "end"]
    assert [line["seq"] for line in events[0].json["lines"]] == [46, 47, 48, 49, 50]


def test_a_failed_archive_upload_keeps_every_row(old_job, s3_buckets):
    import requests

    requests.post(f"{s3_buckets}/moto-api/reset", timeout=10).raise_for_status()  # the logs bucket is gone
    with pytest.raises(StorageError):
        log_archive_job(job_id=old_job.id)
    assert LogEntry.objects.filter(job=old_job).count() == 50
    assert not LogStream.objects.get(job=old_job).is_archived


def test_a_mismatching_read_back_keeps_every_row(old_job, storage_spy):
    """Another writer replaces the archive between its upload and the read-back: the rows stay."""
    import time

    import boto3
    from botocore.exceptions import ClientError

    key = retention.archive_key(owner_id=old_job.owner_id, job_id=old_job.id)
    bucket_name = django_settings.BUCKETS["logs"]
    host, port = storage_spy.upstream
    direct = boto3.client(
        "s3",
        endpoint_url=f"http://{host}:{port}",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name=django_settings.S3_REGION,
    )
    storage_spy.latency = 1.0  # every answer of storage is a second late: the upload's too, once it is stored
    replaced = threading.Event()

    def replace_once_stored():
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                direct.head_object(Bucket=bucket_name, Key=key)
            except ClientError:
                time.sleep(0.02)
                continue
            direct.put_object(Bucket=bucket_name, Key=key, Body=gzip.compress(b'{"seq": 1, "message": "other"}\n'))
            replaced.set()
            return

    writer = threading.Thread(target=replace_once_stored)
    writer.start()
    with pytest.raises(retention.ArchiveVerificationFailed):
        log_archive_job(job_id=old_job.id)
    writer.join(20)
    assert replaced.is_set()
    assert LogEntry.objects.filter(job=old_job).count() == 50
    assert not LogStream.objects.get(job=old_job).is_archived


def test_the_beat_task_archives_through_the_queue(old_job):
    from logs_app.tasks import log_archive_expired

    assert log_archive_expired.delay().get() == 1
    assert LogStream.objects.get(job=old_job).is_archived
