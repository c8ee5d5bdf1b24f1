from django.urls import re_path

from . import views

urlpatterns = [
    re_path(r"^chat/completions/?$", views.ChatCompletionsView.as_view(), name="openai-chat-completions"),
    re_path(r"^responses/?$", views.ResponsesView.as_view(), name="openai-responses"),
    re_path(r"^models/?$", views.ModelListView.as_view(), name="openai-models"),
    re_path(r"^models/(?P<model>[^/]+)/?$", views.ModelDetailView.as_view(), name="openai-model"),
    re_path(r"^files/?$", views.FileListView.as_view(), name="openai-files"),
    re_path(r"^files/(?P<file_id>[^/]+)/?$", views.FileDetailView.as_view(), name="openai-file"),
    re_path(r"^files/(?P<file_id>[^/]+)/content/?$", views.FileContentView.as_view(), name="openai-file-content"),
    re_path(r"^fine_tuning/jobs/?$", views.JobListView.as_view(), name="openai-jobs"),
    re_path(r"^fine_tuning/jobs/(?P<job_id>[^/]+)/?$", views.JobDetailView.as_view(), name="openai-job"),
    re_path(r"^fine_tuning/jobs/(?P<job_id>[^/]+)/cancel/?$", views.JobCancelView.as_view(), name="openai-job-cancel"),
    re_path(r"^fine_tuning/jobs/(?P<job_id>[^/]+)/events/?$", views.JobEventsView.as_view(), name="openai-job-events"),
    re_path(
        r"^fine_tuning/jobs/(?P<job_id>[^/]+)/checkpoints/?$",
        views.JobCheckpointsView.as_view(),
        name="openai-job-checkpoints",
    ),
    re_path(r"^(?P<rest>.*)$", views.UnknownEndpointView.as_view(), name="openai-unknown"),
]
