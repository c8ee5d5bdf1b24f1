"""logs_app hears of a job's end through the jobs app's signal (jobs never imports logs_app)."""

import json

from jobs import services as job_services
from logs_app.events import job_channel
from logs_app.services import log_lines_append


def test_a_finished_job_ends_its_live_streams_once_after_commit(
    job, listen, job_signals, django_capture_on_commit_callbacks
):
    listener = listen(job_channel(job.id))
    with django_capture_on_commit_callbacks(execute=True):
        log_lines_append(job_id=job.id, lines=[{"message": "last words"}])
    with django_capture_on_commit_callbacks(execute=True):
        job_services.job_complete(job_id=job.id, status="failed", error_message="out of memory")
        job_services.job_complete(job_id=job.id, status="failed", error_message="reported twice")
        assert [event.type for event in listener.events()] == ["logs"]  # nothing before commit
    ends = [event for event in listener.events() if event.type == "end"]
    assert len(ends) == 1 and ends[0].id == 1
    assert json.loads(ends[0].data) == {"status": "failed", "last_seq": 1}
    assert job_signals == [("job_finished", {"job_id": job.id, "owner_id": job.owner_id, "status": "failed"})]
