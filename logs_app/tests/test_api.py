import json
from datetime import timedelta

import pytest
from django.utils import timezone

from logs_app.models import LogEntry
from logs_app.services import log_lines_append


def url(job, suffix=""):
    return f"/api/v1/jobs/{job.id}/logs{suffix}"


def fill(job, count=10, **extra):
    lines = [
        {"message": f"line {n}", "level": ["INFO", "WARN", "ERROR", "DEBUG"][n % 4], **extra} for n in range(count)
    ]
    log_lines_append(job_id=job.id, lines=lines)


def test_an_owner_posts_a_json_array_of_strings_and_objects(alice_api, job):
    body = ["plain", {"message": "labelled", "level": "warning", "timestamp": "2024-05-01T12:00:00Z"}]
    response = alice_api.post(url(job), body, format="json")
    assert response.status_code == 201, response.json()
    assert response.json() == {"received": 2, "inserted": 2, "last_seq": 2}
    assert list(LogEntry.objects.filter(job=job).values_list("seq", "level", "source")) == [
        (1, "INFO", "api"),
        (2, "WARN", "api"),
    ]


def test_a_replayed_batch_with_seqs_is_accepted_and_adds_nothing(alice_api, job):
    body = {"lines": [{"seq": 10, "message": "a"}, {"seq": 11, "message": "b"}]}
    assert alice_api.post(url(job), body, format="json").status_code == 201
    replay = alice_api.post(url(job), body, format="json")
    assert replay.status_code == 200
    assert replay.json() == {"received": 2, "inserted": 0, "last_seq": 11}
    assert LogEntry.objects.filter(job=job).count() == 2


def test_a_text_body_is_one_line_per_line_in_the_seed_form(alice_api, job):
    text = "[10:00:00] [INFO] starting\n\n[10:00:01] [ERROR] failed\r\n"
    response = alice_api.generic("POST", url(job), text.encode(), content_type="text/plain; charset=utf-8")
    assert response.status_code == 201
    assert list(LogEntry.objects.filter(job=job).values_list("level", "message")) == [
        ("INFO", "starting"),
        ("ERROR", "failed"),
    ]


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (b'{"message": "not an array"}', "application/json", "Expected a JSON array"),
        (b"[1, 2]", "application/json", "line 0: must be a string or an object"),
        (b'[{"level": "INFO"}]', "application/json", "line 0: message is missing"),
        (b'["ok", {"message": "x", "level": "LOUD"}]', "application/json", "line 1: unknown level"),
        (b'[{"message": "x", "seq": -1}]', "application/json", "line 0: seq must be a whole number"),
        (b'[{"message": "x", "seq": "7"}]', "application/json", "line 0: seq must be a whole number"),
        (b'[{"message": "x", "seq": 3}, {"message": "y", "seq": 3}]', "application/json", "seq 3 appears twice"),
        (b'[{"message": "x", "timestamp": "soon"}]', "application/json", "not ISO 8601"),
        (b"[{broken", "application/json", "JSON parse error"),
        (b'["ok", {"message": "half a pair \\ud83d"}]', "application/json", "at [1].message holds a lone"),
        (b"\xff\xfe bad", "text/plain; charset=utf-8", "not valid utf-8"),
    ],
)
def test_it_refuses_malformed_payloads_with_the_reason_and_stores_nothing(alice_api, job, body, content_type, reason):
    response = alice_api.generic("POST", url(job), body, content_type=content_type)
    assert response.status_code == 400
    assert reason.lower() in response.json()["detail"].lower()
    assert not LogEntry.objects.filter(job=job).exists()


EDGE_OF_TIME = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+23:59"]


@pytest.mark.parametrize("stamp", EDGE_OF_TIME)
def test_a_line_timestamp_outside_the_storable_range_is_a_400_naming_the_line(alice_api, job, stamp):
    """In UTC these fall in year 0 or 10000: no database column holds them (once a 500)."""
    response = alice_api.post(url(job), ["ok", {"message": "x", "timestamp": stamp}], format="json")
    assert response.status_code == 400, response.content[:300]
    assert "line 1" in response.json()["detail"] and "out of range" in response.json()["detail"]
    assert not LogEntry.objects.filter(job=job).exists()


@pytest.mark.parametrize("stamp", EDGE_OF_TIME)
def test_a_text_line_stamped_outside_the_storable_range_is_kept_with_the_time_it_arrived(alice_api, job, stamp):
    before = timezone.now()
    response = alice_api.post(url(job), [f"[{stamp}] [WARN] odd clock", f"{stamp} ERROR odder"], format="json")
    assert response.status_code == 201, response.content[:300]
    stored = list(LogEntry.objects.filter(job=job).order_by("seq").values_list("level", "timestamp"))
    assert [level for level, _ in stored] == ["WARN", "ERROR"]
    assert all(stamped >= before - timedelta(seconds=1) for _, stamped in stored)


def test_a_surrogate_pair_escape_is_stored_as_its_character(alice_api, job):
    response = alice_api.generic("POST", url(job), b'["smile \\ud83d\\ude00"]', content_type="application/json")
    assert response.status_code == 201
    assert LogEntry.objects.get(job=job).message == "smile \U0001f600"


def test_it_refuses_an_over_long_message_instead_of_cutting_it(alice_api, job, settings):
    settings.LOG_MAX_MESSAGE_CHARS = 300
    response = alice_api.post(url(job), ["x" * 301], format="json")
    assert response.status_code == 400 and "longer than 300" in response.json()["detail"]


def test_it_refuses_too_many_lines_in_one_request(alice_api, job, settings):
    settings.LOG_INGEST_MAX_LINES = 3
    response = alice_api.post(url(job), ["a", "b", "c", "d"], format="json")
    assert response.status_code == 413
    assert not LogEntry.objects.filter(job=job).exists()


def test_lines_for_a_finished_job_are_accepted_until_its_log_is_archived(alice_api, make_job, alice):
    from logs_app.models import LogStream

    finished = make_job(alice, status="succeeded")
    assert alice_api.post(url(finished), ["late flush"], format="json").status_code == 201
    LogStream.objects.filter(job=finished).update(archived_at=timezone.now(), archive_key="k")
    response = alice_api.post(url(finished), ["too late"], format="json")
    assert response.status_code == 409 and "archived" in response.json()["detail"]


@pytest.mark.parametrize("suffix", ["", "?format=json", ".txt"])
def test_anonymous_clients_get_401_and_other_users_404(anon_api, bob_api, job, suffix):
    assert anon_api.get(url(job, suffix)).status_code == 401
    response = bob_api.get(url(job, suffix))
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


def test_the_stream_is_refused_with_real_status_codes_not_a_stream_error(anon_api, bob_api, job):
    anonymous = anon_api.get(url(job), HTTP_ACCEPT="text/event-stream")
    assert anonymous.status_code == 401 and anonymous["Content-Type"] == "application/json"
    assert bob_api.get(url(job), HTTP_ACCEPT="text/event-stream").status_code == 404


def test_staff_may_read_any_job_log_but_only_the_owner_writes(olivia_api, bob_api, job):
    fill(job, 3)
    assert olivia_api.get(url(job, "?format=json")).json()["last_seq"] == 3
    stream = olivia_api.get(url(job), HTTP_ACCEPT="text/event-stream")
    assert stream.status_code == 200 and stream["Content-Type"] == "text/event-stream"
    assert olivia_api.post(url(job), ["x"], format="json").status_code == 403
    assert bob_api.post(url(job), ["x"], format="json").status_code == 404
    assert LogEntry.objects.filter(job=job).count() == 3


def test_the_history_pages_by_seq(alice_api, job):
    fill(job, 25)
    first = alice_api.get(url(job), {"format": "json", "limit": 10}).json()
    assert [line["seq"] for line in first["results"]] == list(range(1, 11))
    assert first["has_more"] and "after=10" in first["next"]
    second = alice_api.get(first["next"]).json()
    assert [line["seq"] for line in second["results"]] == list(range(11, 21))
    last = alice_api.get(url(job), {"format": "json", "after": 20, "limit": 10}).json()
    assert [line["seq"] for line in last["results"]] == [21, 22, 23, 24, 25]
    assert not last["has_more"] and last["next"] is None
    assert last["totals"] == {"lines": 25, "warnings": 6, "errors": 6}


def test_the_history_goes_backwards_for_older_lines(alice_api, job):
    fill(job, 25)
    page = alice_api.get(url(job), {"format": "json", "before": 21, "limit": 5}).json()
    assert [line["seq"] for line in page["results"]] == [16, 17, 18, 19, 20]
    assert page["has_more"]
    oldest = alice_api.get(url(job), {"format": "json", "before": 3, "limit": 5}).json()
    assert [line["seq"] for line in oldest["results"]] == [1, 2] and not oldest["has_more"]


def test_accept_json_gives_the_history_too(alice_api, job):
    fill(job, 2)
    response = alice_api.get(url(job), HTTP_ACCEPT="application/json")
    assert [line["message"] for line in response.json()["results"]] == ["line 0", "line 1"]


def test_the_history_filters_by_level_time_and_text(alice_api, job):
    old = timezone.now() - timedelta(days=2)
    log_lines_append(job_id=job.id, lines=[{"message": "old warning", "level": "WARN", "timestamp": old}])
    fill(job, 8)
    levels = alice_api.get(url(job), {"format": "json", "level": "warning,error"}).json()["results"]
    assert {line["level"] for line in levels} == {"WARN", "ERROR"} and len(levels) == 5
    recent = alice_api.get(url(job), {"format": "json", "since": (old + timedelta(hours=1)).isoformat()}).json()
    assert len(recent["results"]) == 8
    text = alice_api.get(url(job), {"format": "json", "q": "LINE 7"}).json()["results"]
    assert [line["message"] for line in text] == ["line 7"]


@pytest.mark.parametrize(
    ("params", "field"),
    [({"limit": 0}, "limit"), ({"limit": 5000}, "limit"), ({"level": "LOUD"}, "level"), ({"since": "x"}, "since")],
)
def test_bad_history_queries_get_400_naming_the_parameter(alice_api, job, params, field):
    response = alice_api.get(url(job), {"format": "json", **params})
    assert response.status_code == 400 and field in response.json()["errors"]


def test_a_bad_resume_position_is_a_400(alice_api, job):
    assert alice_api.get(url(job), {"after": "x"}, HTTP_ACCEPT="text/event-stream").status_code == 400
    response = alice_api.get(url(job), HTTP_ACCEPT="text/event-stream", HTTP_LAST_EVENT_ID=f"job-{job.id}:abc")
    assert response.status_code == 400


def test_resuming_a_finished_job_with_nothing_new_answers_204(alice_api, make_job, alice):
    finished = make_job(alice, status="failed")
    fill(finished, 3)
    response = alice_api.get(url(finished), HTTP_ACCEPT="text/event-stream", HTTP_LAST_EVENT_ID=f"job-{finished.id}:3")
    assert response.status_code == 204


def test_the_text_download_is_the_whole_log_in_the_seed_form(alice_api, job, settings):
    settings.TIME_ZONE = "UTC"
    stamp = timezone.now().replace(hour=9, minute=8, second=7)
    log_lines_append(
        job_id=job.id, lines=[{"message": f"m{n}", "level": "ERROR", "timestamp": stamp} for n in range(3)]
    )
    response = alice_api.get(url(job, ".txt"))
    assert response.status_code == 200
    assert response["Content-Disposition"] == f'attachment; filename="job-{job.id}-logs.txt"'
    text = b"".join(response.streaming_content).decode()
    assert text == "".join(f"[09:08:07] [ERROR] m{n}\n" for n in range(3))


def test_the_viewer_page_is_the_owners(alice_browser, client, job, bob):
    page = alice_browser.get(f"/jobs/{job.id}/logs/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "data-log-viewer" in html and "logs_app/log_viewer.js" in html
    assert f'data-stream-url="/api/v1/jobs/{job.id}/logs"' in html
    assert f'href="/api/v1/jobs/{job.id}/logs.txt"' in html
    client.force_login(bob)
    assert client.get(f"/jobs/{job.id}/logs/").status_code == 404
    client.logout()
    anonymous = client.get(f"/jobs/{job.id}/logs/")
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]


def test_the_openapi_schema_documents_the_log_endpoints(alice_api):
    schema = alice_api.get("/api/schema/", {"format": "json"})
    paths = json.loads(schema.content)["paths"]
    assert "post" in paths["/api/v1/jobs/{job_id}/logs/"] and "/api/v1/jobs/{job_id}/logs.txt" in paths
