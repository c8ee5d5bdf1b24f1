from django.urls import re_path

from finetune_studio.routers import optional_slash_router

from .views import BaseModelListView, DatasetViewSet, JobViewSet, TrainerListView

router = optional_slash_router()
router.register("datasets", DatasetViewSet, basename="api-dataset")
router.register("jobs", JobViewSet, basename="api-job")

urlpatterns = [
    re_path(r"^trainers/?$", TrainerListView.as_view(), name="api-trainer-list"),
    re_path(r"^base-models/?$", BaseModelListView.as_view(), name="api-base-model-list"),
    *router.urls,
]
