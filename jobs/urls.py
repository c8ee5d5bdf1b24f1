from django.urls import path

from . import views

urlpatterns = [
    path("jobs/", views.job_list, name="job-list"),
    path("jobs/new/", views.job_create, name="job-create"),
    path("jobs/<int:pk>/", views.job_detail, name="job-detail"),
    path("jobs/<int:pk>/cancel/", views.job_cancel, name="job-cancel"),
    path("jobs/<int:pk>/delete/", views.job_delete, name="job-delete"),
    path("base-models/", views.base_model_list, name="base-model-list"),
    path("datasets/", views.dataset_list, name="dataset-list"),
    path("datasets/<int:pk>/", views.dataset_detail, name="dataset-detail"),
    path("datasets/<int:pk>/split/", views.dataset_split, name="dataset-split"),
    path("datasets/<int:pk>/delete/", views.dataset_delete, name="dataset-delete"),
]
