import json
import threading

import pytest
from django.db import connection

from logs_app.events import job_channel
from logs_app.models import LogEntry, LogStream
from logs_app.parsing import InvalidLine
from logs_app.services import LogsArchived, log_lines_append


def seqs(job):
    return list(LogEntry.objects.filter(job=job).order_by("seq").values_list("seq", flat=True))


def test_it_numbers_lines_per_job_and_publishes_one_event_per_batch_after_commit(
    job, listen, django_capture_on_commit_callbacks
):
    listener = listen(job_channel(job.id))
    with django_capture_on_commit_callbacks(execute=True):
        log_lines_append(job_id=job.id, lines=[{"message": "a"}, {"message": "b", "level": "warning"}], source="stdout")
        assert listener.events() == []  # nothing is published before the rows are committed
    with django_capture_on_commit_callbacks(execute=True):
        result = log_lines_append(job_id=job.id, lines=[{"message": f"line {n}"} for n in range(3)])
    assert seqs(job) == [1, 2, 3, 4, 5]
    assert result.last_seq == 5 and result.inserted == 3
    first, second = listener.events()
    assert (first.type, first.id, second.id) == ("logs", 2, 5)
    body = json.loads(second.data)
    assert (body["prev_seq"], body["last_seq"]) == (2, 5)
    assert [line["message"] for line in body["lines"]] == ["line 0", "line 1", "line 2"]
    assert body["totals"] == {"lines": 5, "warnings": 1, "errors": 0}
    stored = LogEntry.objects.get(job=job, seq=2)
    assert (stored.level, stored.source) == ("WARN", "stdout")


def test_it_reads_the_level_and_time_of_unlabelled_text_lines(job):
    log_lines_append(job_id=job.id, lines=[{"message": "[12:00:01] [ERROR] CUDA out of memory"}])
    line = LogEntry.objects.get(job=job)
    assert (line.level, line.message) == ("ERROR", "CUDA out of memory")
    assert line.timestamp.second == 1


def test_a_replayed_batch_with_seqs_adds_nothing_and_lines_without_seq_go_after_them(job):
    batch = [{"seq": 1, "message": "one"}, {"seq": 2, "message": "two"}]
    assert log_lines_append(job_id=job.id, lines=batch).inserted == 2
    assert log_lines_append(job_id=job.id, lines=batch).inserted == 0
    result = log_lines_append(job_id=job.id, lines=[{"seq": 2, "message": "two"}, {"message": "three"}])
    assert result.inserted == 1 and result.last_seq == 3
    assert list(LogEntry.objects.filter(job=job).values_list("seq", "message")) == [
        (1, "one"),
        (2, "two"),
        (3, "three"),
    ]
    assert LogStream.objects.get(job=job).line_count == 3


def test_it_refuses_a_malformed_batch_whole(job):
    with pytest.raises(InvalidLine, match="line 1: unknown level"):
        log_lines_append(job_id=job.id, lines=[{"message": "fine"}, {"message": "x", "level": "LOUD"}])
    assert seqs(job) == []


def test_it_stores_nul_bytes_as_replacement_characters(job):
    log_lines_append(job_id=job.id, lines=[{"message": "bad\x00byte"}])
    assert LogEntry.objects.get(job=job).message == "bad\ufffdbyte"


def test_a_big_batch_keeps_every_special_character_and_timestamp_exactly(job, settings):
    settings.TIME_ZONE = "UTC"
    awkward = ["tab\there", "two\nlines", "cr\rhere", "back\\slash \\N", "\\.", "nul\x00", "é ✓ 🚀", "", " "]
    stamp = "2024-05-01T12:00:01.250000+02:00"
    lines = [{"message": f"{n}:{awkward[n % len(awkward)]}"} for n in range(250)]  # past the COPY threshold
    lines[7] = {"message": "stamped", "timestamp": stamp, "level": "ERROR", "source": "a\tb\\c\x00"}
    result = log_lines_append(job_id=job.id, lines=lines, source="stdout")
    stored = list(LogEntry.objects.filter(job=job).order_by("seq").values_list("seq", "message", "source"))
    expected = [line["message"].replace("\x00", "\ufffd") for line in lines]
    assert [message for _, message, _ in stored] == expected
    assert [seq for seq, _, _ in stored] == list(range(1, 251)) and result.last_seq == 250
    special = LogEntry.objects.get(job=job, seq=8)
    assert (special.level, special.source) == ("ERROR", "a\tb\\c\ufffd")
    assert special.timestamp.isoformat() == "2024-05-01T10:00:01.250000+00:00"
    assert [line["message"] for line in result.lines] == expected


def test_it_says_when_the_job_does_not_exist(db):
    from jobs.models import Job

    with pytest.raises(Job.DoesNotExist):
        log_lines_append(job_id=987654, lines=[{"message": "orphan"}])


def test_json_metric_lines_update_the_job_in_the_same_transaction(job):
    from jobs.models import JobMetric

    log_lines_append(job_id=job.id, lines=[{"message": '{"step": 5, "loss": 0.7, "total_steps": 10}'}, "plain"])
    job.refresh_from_db()
    assert list(JobMetric.objects.filter(job=job).values_list("step", flat=True)) == [5]
    assert job.progress["step"] == 5 and job.progress["loss"] == 0.7
    assert LogEntry.objects.filter(job=job).count() == 2  # metric lines stay in the log too


def test_it_refuses_lines_for_an_archived_log(job):
    from django.utils import timezone

    log_lines_append(job_id=job.id, lines=["before"])
    LogStream.objects.filter(job=job).update(archived_at=timezone.now(), archive_key="k")
    with pytest.raises(LogsArchived):
        log_lines_append(job_id=job.id, lines=["after"])


@pytest.mark.postgres
def test_two_concurrent_writers_to_one_job_get_disjoint_increasing_ranges(transactional_db, make_job, alice, listen):
    job = make_job(alice)
    listener = listen(job_channel(job.id))
    listener.listener.channel_items = {}
    from django_eventstream import views as es_views

    es_views.MAX_PENDING, saved = 10_000, es_views.MAX_PENDING  # keep every event to compare
    errors = []

    def writer(name: str):
        try:
            for batch in range(40):
                log_lines_append(job_id=job.id, lines=[{"message": f"{name}-{batch}-{n}"} for n in range(25)])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    try:
        threads = [threading.Thread(target=writer, args=(name,)) for name in ("a", "b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        es_views.MAX_PENDING = saved
    assert errors == []
    assert seqs(job) == list(range(1, 2001))
    # Every batch got a contiguous range: its lines are in order within it.
    for name in ("a", "b"):
        rows = LogEntry.objects.filter(job=job, message__startswith=f"{name}-").order_by("seq")
        messages = [row.message for row in rows]
        assert messages == [f"{name}-{batch}-{n}" for batch in range(40) for n in range(25)]
    # The events tile the seq space: each says which range it covers, ids are the last seqs.
    ranges = sorted((json.loads(event.data)["prev_seq"], event.id) for event in listener.events())
    assert len(ranges) == 80
    assert ranges[0][0] == 0 and ranges[-1][1] == 2000
    assert all(previous[1] == current[0] for previous, current in zip(ranges, ranges[1:], strict=False))
    assert LogStream.objects.get(job=job).last_seq == 2000
