from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from . import views
from .api_views import api_root
from .stream_db import stream_opening

api_v1 = [
    path("", api_root, name="api-root"),
    path("", include("jobs.api.urls")),
    path("", include("logs_app.api.urls")),
    path("", include("models_app.api.urls")),
    path("", include("evaluations.api.urls")),
    path("", include("inference.api.urls")),
    path("", include("webhooks.api.urls")),
    path("", include("sweeps.api.urls")),
]

urlpatterns = [
    path("", include("dashboard.urls")),
    path("healthz", views.healthz, name="healthz"),
    # A stream: its opening waits its turn for the database (a reconnect storm; stream_db).
    path("events/", stream_opening(views.user_events), name="user-events"),
    path("files/<str:token>", views.local_object_download, name="local-object-download"),
    path("accounts/", include("accounts.urls")),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    # OpenAI's files and fine-tuning endpoints, for scripts written against OpenAI's SDKs (docs/openai-api.md).
    path("openai/v1/", include("openai_compat.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("", include("jobs.urls")),
    path("", include("logs_app.urls")),
    path("", include("models_app.urls")),
    path("", include("evaluations.urls")),
    path("", include("webhooks.urls")),
    path("", include("sweeps.urls")),
]

handler404 = "finetune_studio.views.page_not_found"
handler500 = "finetune_studio.views.server_error"
