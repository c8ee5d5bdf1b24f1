from django.urls import re_path
from rest_framework.routers import SimpleRouter

from .views import DatasetViewSet, JobViewSet, TrainerListView

router = SimpleRouter()
# DRF 3.18 turns any truthy trailing_slash argument into "/": set the optional slash afterwards.
router.trailing_slash = "/?"
router.register("datasets", DatasetViewSet, basename="api-dataset")
router.register("jobs", JobViewSet, basename="api-job")

urlpatterns = [
    re_path(r"^trainers/?$", TrainerListView.as_view(), name="api-trainer-list"),
    *router.urls,
]
