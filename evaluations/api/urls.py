from django.urls import re_path

from finetune_studio.routers import optional_slash_router

from .promotion_views import EvaluateForPromotionView
from .views import ChatUsageView, EvaluationViewSet, ModelEvaluateView, ModelParityView

router = optional_slash_router()
router.register("evaluations", EvaluationViewSet, basename="evaluation-api")

urlpatterns = [
    re_path(r"^usage/chat/?$", ChatUsageView.as_view(), name="chat-usage-api"),
    re_path(r"^models/(?P<model_id>[0-9]+)/evaluate/?$", ModelEvaluateView.as_view(), name="model-evaluate-api"),
    re_path(r"^models/(?P<model_id>[0-9]+)/parity/?$", ModelParityView.as_view(), name="model-parity-api"),
    re_path(
        r"^registry/(?P<name>[A-Za-z0-9][A-Za-z0-9._-]{0,99})/versions/(?P<version>[0-9]{1,9})/evaluate/?$",
        EvaluateForPromotionView.as_view(),
        name="registry-evaluate-for-promotion-api",
    ),
    *router.urls,
]
