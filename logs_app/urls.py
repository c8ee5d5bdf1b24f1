from django.urls import path

from . import views

urlpatterns = [
    path("jobs/<int:pk>/logs/", views.job_logs, name="job-logs"),
]
