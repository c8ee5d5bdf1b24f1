from finetune_studio.routers import optional_slash_router

from .views import SweepViewSet

router = optional_slash_router()
router.register("sweeps", SweepViewSet, basename="api-sweep")

urlpatterns = router.urls
