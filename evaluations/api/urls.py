from django.urls import re_path
from rest_framework.routers import SimpleRouter

from .views import EvaluationViewSet, ModelEvaluateView

router = SimpleRouter()
# DRF 3.18 turns any truthy trailing_slash argument into "/": set the optional slash afterwards.
router.trailing_slash = "/?"
router.register("evaluations", EvaluationViewSet, basename="evaluation-api")

urlpatterns = [
    re_path(r"^models/(?P<model_id>[0-9]+)/evaluate/?$", ModelEvaluateView.as_view(), name="model-evaluate-api"),
    *router.urls,
]
