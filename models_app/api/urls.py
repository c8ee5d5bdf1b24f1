from finetune_studio.routers import optional_slash_router

from .views import ModelViewSet

router = optional_slash_router()
router.register("models", ModelViewSet, basename="api-model")

urlpatterns = router.urls
