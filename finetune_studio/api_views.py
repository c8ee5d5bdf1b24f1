from drf_spectacular.utils import extend_schema
from rest_framework.decorators import api_view
from rest_framework.response import Response


@extend_schema(responses={200: dict}, summary="Who you are and where the resources are")
@api_view(["GET"])
def api_root(request):
    return Response(
        {
            "user": request.user.get_username(),
            "is_staff": request.user.is_staff,
            "resources": {
                name: request.build_absolute_uri(f"/api/v1/{name}")
                for name in ("datasets", "jobs", "models", "evaluations", "inference/endpoints")
            },
            "schema": request.build_absolute_uri("/api/schema/"),
        }
    )
