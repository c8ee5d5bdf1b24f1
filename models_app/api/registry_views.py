"""``/api/v1/registry``: registered names with their versions, aliases and promotion gate. Thin views."""

from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from finetune_studio.api import StudioPagination

from .. import registry_selectors
from ..models import RegisteredName
from .registry_serializers import RegisteredNameSerializer, VersionSerializer


def registered_name_of(request, name: str) -> RegisteredName:
    """The name as the requester knows it (404 otherwise); staff may add ``?owner=<id>``."""
    raw_owner = request.query_params.get("owner")
    if raw_owner is not None and not raw_owner.isdigit():
        raise ValidationError({"owner": [f"Must be a user id, got {raw_owner!r}."]})
    try:
        return registry_selectors.registered_name_get(
            user=request.user, name=name, owner_id=int(raw_owner) if raw_owner else None
        )
    except registry_selectors.AmbiguousName as exc:
        raise ValidationError({"owner": [str(exc)]}) from None


def registered_name_body(registered: RegisteredName) -> dict:
    versions = registry_selectors.registered_name_versions(registered_name=registered)
    return {
        **RegisteredNameSerializer(registered).data,
        "versions": VersionSerializer(versions, many=True).data,
    }


class RegistryListView(APIView):
    """The registered names the requester may see (staff: everyone's), with their version counts."""

    @extend_schema(tags=["registry"], responses={200: RegisteredNameSerializer(many=True)})
    def get(self, request):
        paginator = StudioPagination()
        page = paginator.paginate_queryset(registry_selectors.registered_name_list(user=request.user), request, self)
        return paginator.get_paginated_response(RegisteredNameSerializer(page, many=True).data)


class RegisteredNameView(APIView):
    """One name: its versions (newest first) and aliases."""

    @extend_schema(
        tags=["registry"],
        parameters=[OpenApiParameter("owner", int, description="Staff: whose name, when several users have it")],
        responses={
            200: inline_serializer(
                "RegisteredNameDetail",
                {"name": serializers.CharField(), "versions": VersionSerializer(many=True)},
            )
        },
    )
    def get(self, request, name: str):
        return Response(registered_name_body(registered_name_of(request, name)))
