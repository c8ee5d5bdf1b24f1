from django.urls import path, re_path

from . import registry_views, views

NAME = r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]{0,99})"

urlpatterns = [
    path("models/", views.model_list, name="model-list"),
    path("models/<int:pk>/", views.model_detail, name="model-detail"),
    path("models/<int:pk>/download/", views.model_download, name="model-download"),
    path("models/<int:pk>/delete/", views.model_delete, name="model-delete"),
    path("models/<int:pk>/deploy/", views.model_deploy, name="model-deploy"),
    path("registry/", registry_views.registry_list, name="registry-list"),
    re_path(rf"^registry/{NAME}/$", registry_views.registry_detail, name="registry-detail"),
    re_path(rf"^registry/{NAME}/aliases/$", registry_views.registry_alias_move, name="registry-alias-move"),
    re_path(rf"^registry/{NAME}/gate/$", registry_views.registry_gate_set, name="registry-gate-set"),
]
