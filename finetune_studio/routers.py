from rest_framework.routers import SimpleRouter


def optional_slash_router() -> SimpleRouter:
    """A router answering both ``/api/v1/models/1`` (the seed's form) and ``/api/v1/models/1/``.

    DRF 3.18 turns any truthy ``trailing_slash`` argument into "/", so the pattern is set afterwards.
    """
    router = SimpleRouter()
    router.trailing_slash = "/?"
    return router
