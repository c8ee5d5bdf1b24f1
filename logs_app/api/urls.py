from django.urls import re_path

from .views import JobLogsTextView, JobLogsView

urlpatterns = [
    re_path(r"^jobs/(?P<job_id>\d+)/logs\.txt$", JobLogsTextView.as_view(), name="job-logs-txt"),
    re_path(r"^jobs/(?P<job_id>\d+)/logs/?$", JobLogsView.as_view(), name="job-logs-api"),
]
