"""Model registry API: thin viewsets (validate, call a service, serialize)."""

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.core.paginator import Paginator as DjangoPaginator
from django.db.models import QuerySet
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response

from finetune_studio.api import Conflict, RequestTooLarge, ServiceUnavailable, StudioPagination, error_response
from finetune_studio.keys import InvalidName, clean_relative_path
from finetune_studio.objects import StorageError, bucket

from .. import archive, deploy, deployments, selectors, services
from ..artifacts import content_type_of
from ..filters import ModelFilter, StrictOrderingFilter
from ..models import RegisteredModel
from ..uploads import StorageUploadHandler, StreamedFile, StreamingMultiPartParser
from .serializers import (
    ModelDeploySerializer,
    ModelDetailSerializer,
    ModelFileSerializer,
    ModelListSerializer,
    ModelUpdateSerializer,
    ModelWriteSerializer,
)


class DeepPagePaginator(DjangoPaginator):
    """Pages far from the start pick their ids first, then load just those rows, in one query.

    ``OFFSET 50000`` over the full rows reads (and throws away) 50,000 heap rows; the inner
    ``SELECT id … ORDER BY … LIMIT/OFFSET`` walks only the ordering index (index-only scan),
    and the outer query keeps the same ordering for the page's few rows.
    """

    DEEP_OFFSET = 1000

    def page(self, number):
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        if bottom < self.DEEP_OFFSET or not isinstance(self.object_list, QuerySet):
            return super().page(number)
        top = bottom + self.per_page
        if top + self.orphans >= self.count:
            top = self.count
        ids = self.object_list.values("pk")[bottom:top]
        return self._get_page(self.object_list.filter(pk__in=ids), number, self)


class ModelPagination(StudioPagination):
    """Page numbers and sizes that are not positive integers are a 400, not a silent default."""

    django_paginator_class = DeepPagePaginator

    def paginate_queryset(self, queryset, request, view=None):
        errors = {}
        for param in (self.page_query_param, self.page_size_query_param):
            raw = request.query_params.get(param)
            if raw is not None and raw != "last" and (not raw.isdigit() or int(raw) < 1):
                errors[param] = [f"Must be a positive integer, got {raw!r}."]
        if errors:
            raise serializers.ValidationError(errors)
        return super().paginate_queryset(queryset, request, view)


class ZipRenderer(BaseRenderer):
    """Lets clients ask for ``Accept: application/zip``; error bodies still come out as JSON."""

    media_type = "application/zip"
    format = "zip"
    charset = None

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return JSONRenderer().render(data)


def _links_absolute(request, links: dict) -> dict:
    """Local storage links are app paths: make them absolute for the client's host."""

    def absolute(url):
        return request.build_absolute_uri(url) if url and url.startswith("/") else url

    return {
        "lora_adapters": absolute(links["lora_adapters"]),
        "gguf": absolute(links["gguf"]),
        "files": {path: absolute(url) for path, url in links["files"].items()},
    }


def _detail_body(request, model: RegisteredModel) -> dict:
    try:
        links = selectors.model_download_links(model)
    except StorageError as exc:
        raise ServiceUnavailable(f"Could not sign download links: {exc}")
    model_data = ModelDetailSerializer(model, context={"request": request}).data
    return {"model": model_data, "download_links": _links_absolute(request, links)}


# What detail, create and update answer: the model and fresh download links (one schema for all three).
MODEL_WITH_LINKS = inline_serializer(
    "ModelWithLinks",
    {
        "model": ModelDetailSerializer(),
        "download_links": inline_serializer(
            "DownloadLinks",
            {
                "lora_adapters": serializers.URLField(allow_null=True),
                "gguf": serializers.URLField(allow_null=True),
                "files": serializers.DictField(child=serializers.URLField()),
            },
        ),
    },
)


@extend_schema(tags=["models"])
class ModelViewSet(viewsets.ViewSet):
    """``/api/v1/models``: the registry of fine-tuned models, their files, links and ZIP download."""

    pagination_class = ModelPagination
    filter_backends = [DjangoFilterBackend, StrictOrderingFilter]
    filterset_class = ModelFilter
    ordering = ["-created_at", "-id"]
    queryset = RegisteredModel.objects.none()  # for schema generation; reads go through selectors

    def get_queryset(self):
        return selectors.model_list(user=self.request.user)

    def _model(self, pk) -> RegisteredModel:
        if not str(pk).isdigit():
            raise NotFound()
        return selectors.model_get(user=self.request.user, model_id=pk)

    @extend_schema(
        parameters=[
            OpenApiParameter("base_model", str),
            OpenApiParameter("status", str, enum=RegisteredModel.Status.values),
            OpenApiParameter("type", str, enum=RegisteredModel.Type.values),
            OpenApiParameter("job", int),
            OpenApiParameter("date_from", str, description="ISO date or date-time (inclusive)"),
            OpenApiParameter("date_to", str, description="ISO date (whole day, inclusive) or date-time"),
            OpenApiParameter("search", str, description="In name and description"),
            OpenApiParameter("ordering", str, description="created_at, updated_at, name, total_size, …; '-' = desc"),
            OpenApiParameter("page", int),
            OpenApiParameter("page_size", int, description="1–200 (default 50)"),
        ],
        responses={200: ModelListSerializer(many=True)},
    )
    def list(self, request):
        queryset = self.get_queryset()
        for backend in self.filter_backends:
            queryset = backend().filter_queryset(request, queryset, self)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(queryset, request, view=self)
        return paginator.get_paginated_response(ModelListSerializer(page, many=True).data)

    @extend_schema(responses={200: MODEL_WITH_LINKS})
    def retrieve(self, request, pk=None):
        return Response(_detail_body(request, self._model(pk)))

    @extend_schema(request=ModelWriteSerializer, responses={201: MODEL_WITH_LINKS})
    def create(self, request):
        serializer = ModelWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        # ModelsInvalid (400) and ModelsConflict (409) are mapped by the API's exception handler.
        model = services.model_create(
            owner=request.user,
            name=data["name"],
            description=data["description"],
            base_model=data["base_model"],
            type=data["type"],
            status=data["status"],
            job_id=data["job"],
            training_metrics=data["training_metrics"],
            registered_name=data["registered_name"],
        )
        return Response(_detail_body(request, model), status=status.HTTP_201_CREATED)

    @extend_schema(request=ModelUpdateSerializer, responses={200: MODEL_WITH_LINKS})
    def update(self, request, pk=None):
        return self._update(request, pk, partial=False)

    @extend_schema(request=ModelUpdateSerializer, responses={200: MODEL_WITH_LINKS})
    def partial_update(self, request, pk=None):
        return self._update(request, pk, partial=True)

    def _update(self, request, pk, *, partial: bool):
        model = self._model(pk)
        serializer = ModelUpdateSerializer(data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        # ModelsInvalid (a model without files made ready) is a 400 through the API's exception handler.
        model = services.model_update(model_id=model.id, changes=dict(serializer.validated_data))
        return Response(_detail_body(request, model))

    @extend_schema(responses={204: None, 503: OpenApiTypes.OBJECT})
    def destroy(self, request, pk=None):
        model = self._model(pk)
        try:
            services.model_delete(model_id=model.id)
        except StorageError as exc:
            # The row stays: deleting it would orphan objects nobody could find again.
            raise ServiceUnavailable(f"Could not delete the model's files from storage; nothing was deleted: {exc}")
        except ObjectDoesNotExist:
            raise NotFound()
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        request=ModelDeploySerializer,
        responses={
            202: inline_serializer(
                "DeployAccepted",
                {
                    "model": serializers.IntegerField(),
                    "deploy_status": serializers.CharField(),
                    "ollama_name": serializers.CharField(),
                    "base": serializers.CharField(),
                    "url": serializers.CharField(),
                },
            ),
            400: OpenApiTypes.OBJECT,
            409: OpenApiTypes.OBJECT,
            503: OpenApiTypes.OBJECT,
        },
    )
    @action(detail=True, methods=["post"])
    def deploy(self, request, pk=None):
        """Deploy the LoRA adapter to Ollama (settings.OLLAMA_URL): checked now, uploaded and created by a task;
        follow ``deploy_status`` on the model (or the ``model`` event on the user's channel)."""
        model = self._model(pk)
        serializer = ModelDeploySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            model = deployments.model_deploy_start(model_id=model.id, **serializer.validated_data)
        except deploy.DeployRefused as exc:
            return Response({"detail": str(exc), "code": exc.code}, status=exc.status_code)
        return Response(
            {
                "model": model.id,
                "deploy_status": model.deploy_status,
                "ollama_name": model.deploy_details.get("target"),
                "base": model.deploy_details.get("base"),
                "url": f"/api/v1/models/{model.id}",
            },
            status=status.HTTP_202_ACCEPTED,
        )

    @extend_schema(responses={(200, "application/zip"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"], renderer_classes=[JSONRenderer, ZipRenderer])
    def download(self, request, pk=None):
        return archive.zip_response(request, self._model(pk))

    @extend_schema(
        request={
            "multipart/form-data": inline_serializer(
                "ModelFileUpload", {"path": serializers.CharField(), "file": serializers.FileField()}
            )
        },
        responses={201: ModelFileSerializer},
    )
    @action(detail=True, methods=["post"], parser_classes=[StreamingMultiPartParser], url_path="files")
    def files(self, request, pk=None):
        model = self._model(pk)
        if model.status == RegisteredModel.Status.ARCHIVED:
            raise Conflict("The model is archived: its files can no longer change.")
        handler = StorageUploadHandler(key_for_path=model.file_key, max_bytes=settings.MODEL_FILE_MAX_UPLOAD_BYTES)
        try:
            request._request.upload_handlers = [handler]
        except AttributeError:
            # Session-authenticated POSTs had their body parsed by the CSRF check already (to a temp file).
            return self._store_parsed_upload(request, model)
        try:
            uploaded = request.FILES.get("file")
        finally:
            handler.abort()  # no-op once the upload finished; otherwise storage must not keep a partial object
        if not isinstance(uploaded, StreamedFile):
            return error_response("Send the file in a multipart field named 'file' (and 'path' before it).")
        entry = services.model_file_add(model_id=model.id, path=handler.path, upload=uploaded.result)
        return Response(ModelFileSerializer(entry).data, status=status.HTTP_201_CREATED)

    def _store_parsed_upload(self, request, model: RegisteredModel) -> Response:
        uploaded = request.FILES.get("file")
        if uploaded is None:
            return error_response("Send the file in a multipart field named 'file' (and 'path' before it).")
        try:
            path = clean_relative_path(request.data.get("path") or "")
        except InvalidName as exc:
            return error_response(str(exc), errors={"path": [str(exc)]})
        if uploaded.size > settings.MODEL_FILE_MAX_UPLOAD_BYTES:
            raise RequestTooLarge(f"The file is larger than the limit of {settings.MODEL_FILE_MAX_UPLOAD_BYTES} bytes.")
        try:
            result = bucket("models").upload(model.file_key(path), uploaded, content_type=content_type_of(path))
        except StorageError as exc:
            raise ServiceUnavailable(f"Storage failed while uploading: {exc}")
        entry = services.model_file_add(model_id=model.id, path=path, upload=result)
        return Response(ModelFileSerializer(entry).data, status=status.HTTP_201_CREATED)
