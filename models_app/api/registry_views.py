"""``/api/v1/registry``: registered names with their versions, aliases and promotion gate. Thin views."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import generics, serializers, status
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from finetune_studio.api import StudioPagination
from finetune_studio.registry_names import InvalidRegisteredName, check_alias

from .. import registry, registry_selectors
from ..models import RegisteredName
from .registry_serializers import (
    AliasEventSerializer,
    AliasMoveSerializer,
    AliasSerializer,
    GateSerializer,
    RegisteredNameSerializer,
    VersionSerializer,
)
from .views import _detail_body


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


VERSIONS_SHOWN = 100
VERSIONS_MAX = 500


def _positive(request, param: str) -> int | None:
    raw = request.query_params.get(param)
    if raw is None:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ValidationError({param: [f"Must be a positive integer, got {raw!r}."]})
    return int(raw)


def registered_name_body(request, registered: RegisteredName) -> dict:
    """The name, its newest versions (``?versions=N``, default 100, at most 500; ``?before=V`` pages back by
    version number, an index range scan however many versions there are), aliases, gate and history."""
    limit = min(_positive(request, "versions") or VERSIONS_SHOWN, VERSIONS_MAX)
    before = _positive(request, "before")
    versions = registry_selectors.registered_name_versions(registered_name=registered)
    if before is not None:
        versions = versions.filter(version__lt=before)
    page = list(versions[: limit + 1])
    older = page[limit].version + 1 if len(page) > limit else None
    gate = registry_selectors.name_gate(registered_name=registered)
    return {
        **RegisteredNameSerializer(registered).data,
        "versions": VersionSerializer(page[:limit], many=True).data,
        "older_versions": f"/api/v1/registry/{registered.name}?before={older}" if older else None,
        "aliases": AliasSerializer(registry_selectors.name_aliases(registered_name=registered), many=True).data,
        "gate": GateSerializer(gate).data if gate else None,
        "history": AliasEventSerializer(registry_selectors.alias_history(registered_name=registered), many=True).data,
    }


def _alias_name(alias: str) -> str:
    try:
        return check_alias(alias)
    except InvalidRegisteredName:
        raise NotFound(f"no alias {alias!r}") from None


@extend_schema(tags=["registry"])
class RegistryListView(generics.ListAPIView):
    """The registered names the requester may see (staff: everyone's), with their version counts."""

    serializer_class = RegisteredNameSerializer
    pagination_class = StudioPagination
    filter_backends: list = []

    def get_queryset(self):
        return registry_selectors.registered_name_list(user=self.request.user)


class RegisteredNameView(APIView):
    """One name: its versions (newest first) and aliases."""

    @extend_schema(
        tags=["registry"],
        parameters=[
            OpenApiParameter("owner", int, description="Staff: whose name, when several users have it"),
            OpenApiParameter("versions", int, description="How many versions (newest first; 100, at most 500)"),
            OpenApiParameter("before", int, description="Only versions numbered below this one"),
        ],
        responses={
            200: inline_serializer(
                "RegisteredNameDetail",
                {
                    "name": serializers.CharField(),
                    "versions": VersionSerializer(many=True),
                    "older_versions": serializers.CharField(allow_null=True),
                    "aliases": AliasSerializer(many=True),
                    "gate": GateSerializer(allow_null=True),
                    "history": AliasEventSerializer(many=True),
                },
            )
        },
    )
    def get(self, request, name: str):
        return Response(registered_name_body(request, registered_name_of(request, name)))


class AliasView(APIView):
    """``GET`` resolves an alias to its version (with download links and the ZIP URL); ``PUT`` moves it."""

    @extend_schema(tags=["registry"], responses={200: OpenApiTypes.OBJECT, 404: OpenApiTypes.OBJECT})
    def get(self, request, name: str, alias: str):
        raw_owner = request.query_params.get("owner")
        if raw_owner is not None and not raw_owner.isdigit():
            raise ValidationError({"owner": [f"Must be a user id, got {raw_owner!r}."]})
        try:
            found = registry_selectors.alias_resolve(
                user=request.user, name=name, alias=_alias_name(alias), owner_id=int(raw_owner) if raw_owner else None
            )
        except registry_selectors.AmbiguousName as exc:
            raise ValidationError({"owner": [str(exc)]}) from None
        registered = found.registered_name
        if found.model is None:
            raise NotFound(f"{registered.name}@{found.alias} points to a version that was deleted")
        body = _detail_body(request, found.model)
        return Response(
            {
                "name": registered.name,
                "alias": found.alias,
                "version": found.model.version,
                "moved_at": found.moved_at,
                **body,
                "zip_url": request.build_absolute_uri(f"/api/v1/models/{found.model.id}/download"),
            }
        )

    @extend_schema(
        tags=["registry"],
        request=AliasMoveSerializer,
        responses={200: AliasSerializer, 400: OpenApiTypes.OBJECT, 403: OpenApiTypes.OBJECT, 409: OpenApiTypes.OBJECT},
    )
    def put(self, request, name: str, alias: str):
        registered = registered_name_of(request, name)
        given = AliasMoveSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        try:
            moved = registry.alias_move(
                registered_name=registered, alias=alias, moved_by=request.user, **given.validated_data
            )
        except registry.RegistryInvalid as exc:
            raise ValidationError({exc.field: [str(exc)]}) from None
        except registry.OverrideNotAllowed as exc:
            raise PermissionDenied(str(exc)) from None
        except registry.AliasConflict as exc:
            return Response(
                {"detail": str(exc), "current_version": exc.current_version}, status=status.HTTP_409_CONFLICT
            )
        except registry.GateRefused as exc:
            return Response({"detail": str(exc), "evidence": exc.evidence.as_dict()}, status=status.HTTP_409_CONFLICT)
        moved = registry_selectors.alias_get(registered_name=registered, alias=moved.alias)
        return Response(AliasSerializer(moved).data)


class GateView(APIView):
    """The promotion gate: ``GET``, ``PUT`` {test_set_path, metric, endpoint, threshold, alias?}, ``DELETE``."""

    @extend_schema(tags=["registry"], responses={200: GateSerializer, 404: OpenApiTypes.OBJECT})
    def get(self, request, name: str):
        gate = registry_selectors.name_gate(registered_name=registered_name_of(request, name))
        if gate is None:
            raise NotFound("this name has no gate")
        return Response(GateSerializer(gate).data)

    @extend_schema(tags=["registry"], request=GateSerializer, responses={200: GateSerializer})
    def put(self, request, name: str):
        registered = registered_name_of(request, name)
        given = GateSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        data = given.validated_data
        try:
            gate = registry.gate_set(
                registered_name=registered,
                test_set_path=data["test_set_path"],
                metric=data.get("metric"),
                endpoint=data.get("endpoint", "ollama"),
                threshold=data.get("threshold", 0.0),
                alias=data.get("alias", "champion"),
                updated_by=request.user,
            )
        except registry.RegistryInvalid as exc:
            raise ValidationError({exc.field: [str(exc)]}) from None
        return Response(GateSerializer(gate).data)

    @extend_schema(tags=["registry"], responses={204: None})
    def delete(self, request, name: str):
        if not registry.gate_remove(registered_name=registered_name_of(request, name)):
            raise NotFound("this name has no gate")
        return Response(status=status.HTTP_204_NO_CONTENT)
