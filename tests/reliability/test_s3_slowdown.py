"""S3 throttling (503 SlowDown) and cut reads: retried by boto3 where it can be, never a silent loss where it cannot."""

import hashlib
import io
import json
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from finetune_studio.objects import StorageError, bucket
from logs_app.aggregation import job_log_prefix, log_objects_aggregate
from logs_app.models import LogCursor, LogEntry
from models_app.models import RegisteredModel
from models_app.services import artifacts_manifest

from .support import BIG, read_stream

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

# More SlowDowns than botocore's standard mode makes attempts (settings: max_attempts 5).
EXHAUSTING = 12


def test_a_model_file_upload_meeting_slowdowns_is_retried_and_stored_intact(world, alice_api, storage_spy):
    storage_spy.slow_down(2)
    response = alice_api.post(
        f"/api/v1/models/{world.model.id}/files",
        {"path": "extra/w.bin", "file": SimpleUploadedFile("w.bin", BIG)},
        format="multipart",
    )
    assert response.status_code == 201, response.content[:300]
    assert storage_spy.slowdowns_sent == 2  # both were met, and retried past
    stored = bucket("models").read_bytes(world.model.storage_path + "extra/w.bin")
    assert hashlib.sha256(stored).hexdigest() == hashlib.sha256(BIG).hexdigest()
    files = {entry["path"]: entry for entry in RegisteredModel.objects.get(id=world.model.id).files}
    assert files["extra/w.bin"]["sha256"] == hashlib.sha256(BIG).hexdigest()
    print("FAULTS", json.dumps({"scenario": "s3 slowdown during upload", "slowdowns": 2, "rows_lost": 0}))


def test_a_zip_meeting_slowdowns_is_retried_whole_or_aborted_never_truncated(world, alice_api, storage_spy):
    model = world.model
    bucket("models").put_bytes(model.storage_path + "gguf/model.gguf", BIG)
    RegisteredModel.objects.filter(id=model.id).update(files=artifacts_manifest(model.storage_path))

    # A few SlowDowns: boto3 retries them and the archive is complete and valid.
    storage_spy.slow_down(2)
    response = alice_api.get(f"/api/v1/models/{model.id}/download")
    assert response.status_code == 200
    received, error = read_stream(response)
    assert error is None
    with zipfile.ZipFile(io.BytesIO(received)) as zipped:
        assert zipped.testzip() is None
        assert zipped.read("gguf/model.gguf") == BIG
    assert storage_spy.slowdowns_sent == 2

    # More than boto3 will retry: the stream aborts, and what arrived is not a valid archive.
    storage_spy.slow_down(EXHAUSTING)
    response = alice_api.get(f"/api/v1/models/{model.id}/download")
    if response.status_code == 200:
        received, error = read_stream(response)
        assert error is not None, "the stream ended normally although storage kept refusing"
        with pytest.raises(zipfile.BadZipFile):
            zipfile.ZipFile(io.BytesIO(received)).testzip()
    else:
        assert response.status_code == 503
    storage_spy.heal()
    print(
        "FAULTS",
        json.dumps(
            {
                "scenario": "s3 slowdown during zip",
                "slowdowns": storage_spy.slowdowns_sent,
                "retried_zips_valid": 1,
                "valid_truncated_zips": 0,
            }
        ),
    )


def _log_object(lines: range) -> bytes:
    return "".join(f"trainer line {number:05d}\n" for number in lines).encode()


def test_log_aggregation_meeting_s3_faults_resumes_without_losing_or_repeating_a_line(world, storage_spy):
    job = world.running_job  # an external job: its trainer writes log objects, the aggregator reads them
    key = job_log_prefix(owner_id=job.owner_id, job_id=job.id) + "train.log"
    logs = bucket("logs")
    before = LogEntry.objects.filter(job_id=job.id).count()

    logs.put_bytes(key, _log_object(range(0, 300)))
    storage_spy.slow_down(2)
    assert log_objects_aggregate(job_id=job.id) == 300  # retried by boto3 inside the run
    runs, failed_runs = 1, 0

    # The trainer writes more; storage now throttles past every retry: the run fails and reads nothing.
    logs.put_bytes(key, _log_object(range(0, 3000)))
    offset = LogCursor.objects.get(job_id=job.id, key=key).offset
    storage_spy.slow_down(EXHAUSTING)
    with pytest.raises(StorageError):
        log_objects_aggregate(job_id=job.id)
    runs, failed_runs = runs + 1, failed_runs + 1
    assert LogCursor.objects.get(job_id=job.id, key=key).offset == offset
    storage_spy.heal()

    # The read is cut mid-body: whatever arrived is not taken, the cursor stays before the unread bytes.
    storage_spy.reset_after = 20_000
    with pytest.raises(Exception):  # noqa: B017  (botocore's streaming error; the run fails, the next retries)
        log_objects_aggregate(job_id=job.id)
    runs, failed_runs = runs + 1, failed_runs + 1
    assert LogCursor.objects.get(job_id=job.id, key=key).offset == offset
    storage_spy.heal()

    assert log_objects_aggregate(job_id=job.id) == 2700  # the next run reads exactly what was left
    runs += 1
    messages = list(
        LogEntry.objects.filter(job_id=job.id, source="trainer").order_by("seq").values_list("message", flat=True)
    )
    assert messages == [f"trainer line {number:05d}" for number in range(3000)]
    assert LogEntry.objects.filter(job_id=job.id).count() == before + 3000
    print(
        "FAULTS",
        json.dumps(
            {
                "scenario": "s3 slowdown and cut reads during log aggregation",
                "slowdowns": storage_spy.slowdowns_sent,
                "resets": storage_spy.resets,
                "runs": runs,
                "failed_runs": failed_runs,
                "lines": 3000,
                "lines_lost": 0,
                "lines_duplicated": 0,
            }
        ),
    )
