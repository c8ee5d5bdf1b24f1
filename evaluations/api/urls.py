from django.urls import re_path

from finetune_studio.routers import optional_slash_router

from .views import EvaluationViewSet, ModelEvaluateView

router = optional_slash_router()
router.register("evaluations", EvaluationViewSet, basename="evaluation-api")

urlpatterns = [
    re_path(r"^models/(?P<model_id>[0-9]+)/evaluate/?$", ModelEvaluateView.as_view(), name="model-evaluate-api"),
    *router.urls,
]
