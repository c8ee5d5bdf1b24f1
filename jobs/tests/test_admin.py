from jobs import services
from jobs.models import Job
from logs_app.models import LogEntry
from logs_app.services import log_lines_append


def test_admin_deletes_finished_jobs_through_the_service_with_their_log(
    admin_client, alice, make_dataset, queued_job, django_capture_on_commit_callbacks
):
    from finetune_studio.objects import bucket

    dataset = make_dataset(alice)
    running, finished = queued_job(alice, dataset, "example"), queued_job(alice, dataset, "example")
    log_lines_append(job_id=finished.id, lines=["a line"])
    bucket("logs").put_bytes(finished.storage_prefix + "logs/0001.log", b"a line\n")
    services.job_cancel(job_id=finished.id)

    # A job still running cannot be deleted from the admin either (as in the API: cancel it first).
    assert admin_client.get(f"/admin/jobs/job/{running.id}/delete/").status_code == 403
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            "/admin/jobs/job/",
            {"action": "delete_selected", "_selected_action": [running.id, finished.id], "post": "yes"},
            follow=True,
        )
    assert response.status_code == 200
    assert list(Job.objects.values_list("id", flat=True)) == [running.id]
    assert not LogEntry.objects.filter(job_id=finished.id).exists()
    assert list(bucket("logs").list(finished.storage_prefix)) == []
    assert "cancel it before deleting it" in response.content.decode()


def test_admin_shows_a_datasets_tools_and_call_answers_read_only(admin_client, alice, make_dataset):
    from tests.factories import tool_call_records

    dataset = make_dataset(alice, rows=tool_call_records(calls=2, texts=1), name="weather")
    listing = admin_client.get("/admin/jobs/dataset/").content.decode()
    assert '<td class="field-tool_call_answers">2</td>' in listing
    change = admin_client.get(f"/admin/jobs/dataset/{dataset.id}/change/").content.decode()
    assert 'name="tools"' not in change and 'name="tool_call_answers"' not in change  # shown, not editable
    assert "get_weather" in change and "set_timer" in change
