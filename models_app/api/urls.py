from rest_framework.routers import SimpleRouter

from .views import ModelViewSet

router = SimpleRouter()
# DRF 3.18 turns any truthy trailing_slash argument into "/", so the optional slash is set afterwards:
# both /api/v1/models/1 and /api/v1/models/1/ must resolve.
router.trailing_slash = "/?"
router.register("models", ModelViewSet, basename="api-model")

urlpatterns = router.urls
