from django.urls import path, re_path

from . import promotion_views, views

urlpatterns = [
    path("evaluations/", views.evaluation_list, name="evaluation-list"),
    path("evaluations/new/", views.evaluation_create, name="evaluation-create"),
    path("evaluations/<int:pk>/", views.evaluation_detail, name="evaluation-detail"),
    path("evaluations/<int:pk>/cancel/", views.evaluation_cancel, name="evaluation-cancel"),
    path("evaluations/<int:pk>/retry/", views.evaluation_retry, name="evaluation-retry"),
    path("models/<int:pk>/parity/", views.model_parity, name="model-parity"),
    path("models/<int:pk>/chat/", views.model_chat, name="model-chat"),
    path("models/<int:pk>/chat/stream/", views.model_chat_stream, name="model-chat-stream"),
    re_path(
        r"^registry/(?P<name>[A-Za-z0-9][A-Za-z0-9._-]{0,99})/versions/(?P<version>[0-9]+)/evaluate/$",
        promotion_views.evaluate_for_promotion,
        name="registry-evaluate-for-promotion",
    ),
]
