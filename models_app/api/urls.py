from django.urls import re_path

from finetune_studio.routers import optional_slash_router

from . import registry_views
from .views import ModelViewSet

NAME = r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]{0,99})"

router = optional_slash_router()
router.register("models", ModelViewSet, basename="api-model")

urlpatterns = [
    *router.urls,
    re_path(r"^registry/?$", registry_views.RegistryListView.as_view(), name="api-registry-list"),
    re_path(rf"^registry/{NAME}/?$", registry_views.RegisteredNameView.as_view(), name="api-registry-name"),
    re_path(rf"^registry/{NAME}/gate/?$", registry_views.GateView.as_view(), name="api-registry-gate"),
    re_path(
        rf"^registry/{NAME}/aliases/(?P<alias>[^/]+)/?$", registry_views.AliasView.as_view(), name="api-registry-alias"
    ),
]
