from django.urls import re_path

from finetune_studio.stream_db import stream_opening

from .views import JobLogsTextView, JobLogsView

urlpatterns = [
    re_path(r"^jobs/(?P<job_id>\d+)/logs\.txt$", JobLogsTextView.as_view(), name="job-logs-txt"),
    # GET opens a live stream: it waits its turn for the database (a reconnect storm), POST ingests at once.
    re_path(r"^jobs/(?P<job_id>\d+)/logs/?$", stream_opening(JobLogsView.as_view()), name="job-logs-api"),
]
