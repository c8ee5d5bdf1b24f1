from finetune_studio.routers import optional_slash_router

from .views import WebhookViewSet

router = optional_slash_router()
router.register("webhooks", WebhookViewSet, basename="api-webhook")

urlpatterns = router.urls
