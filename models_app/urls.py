from django.urls import path

from . import views

urlpatterns = [
    path("models/", views.model_list, name="model-list"),
    path("models/<int:pk>/", views.model_detail, name="model-detail"),
    path("models/<int:pk>/download/", views.model_download, name="model-download"),
    path("models/<int:pk>/delete/", views.model_delete, name="model-delete"),
    path("models/<int:pk>/deploy/", views.model_deploy, name="model-deploy"),
]
