from django.urls import path

from . import views

urlpatterns = [
    path("evaluations/", views.evaluation_list, name="evaluation-list"),
    path("evaluations/new/", views.evaluation_create, name="evaluation-create"),
    path("evaluations/<int:pk>/", views.evaluation_detail, name="evaluation-detail"),
    path("evaluations/<int:pk>/cancel/", views.evaluation_cancel, name="evaluation-cancel"),
    path("evaluations/<int:pk>/retry/", views.evaluation_retry, name="evaluation-retry"),
]
