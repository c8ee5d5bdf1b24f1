"""``/openai/v1/``: OpenAI's files and fine-tuning endpoints, thin over this app's services and selectors.

Point an OpenAI SDK at ``<studio>/openai/v1`` with a studio API token as its key. Every answer, errors
included, is shaped as OpenAI's (``{"error": {"message", "type", "param", "code"}}``), so the SDKs raise their
usual exceptions with the studio's reason.
"""

import json
from dataclasses import replace

from django.http import HttpResponse, StreamingHttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, status
from rest_framework.authentication import TokenAuthentication
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from finetune_studio import objects
from finetune_studio.api import Conflict, RequestTooLarge, ServiceUnavailable, exception_handler
from finetune_studio.parsers import JSONParser
from finetune_studio.streaming import response_chunks
from jobs import services as job_services
from jobs.uploads import limit_dataset_uploads
from models_app import services as model_services

from .. import selectors, services
from ..services import OpenAIRequestInvalid
from .responses import ResponseCreateSerializer, response_events, response_object
from .serializers import (
    ChatCompletionSerializer,
    FileListQuerySerializer,
    FileUploadSerializer,
    JobCreateSerializer,
    ListQuerySerializer,
    base_model_object,
    chat_completion_events,
    chat_completion_object,
    checkpoint_object,
    event_object,
    file_object,
    job_object,
    list_object,
    model_object,
    results_file_object,
)

SUPPORTED = (
    "POST /chat/completions, POST /responses, GET /models, GET /models/{id}, DELETE /models/{id}, "
    "POST /files, GET /files, GET /files/{id}, GET /files/{id}/content, DELETE /files/{id}, "
    "POST /fine_tuning/jobs, GET /fine_tuning/jobs, GET /fine_tuning/jobs/{id}, "
    "POST /fine_tuning/jobs/{id}/cancel, GET /fine_tuning/jobs/{id}/events, GET /fine_tuning/jobs/{id}/checkpoints"
)
_CODES = {
    401: "invalid_api_key",
    403: "insufficient_permissions",
    404: "not_found",
    409: "conflict",
    413: "file_too_large",
    429: "rate_limit_exceeded",
}


class BearerTokenAuthentication(TokenAuthentication):
    """``Authorization: Bearer <studio API token>``: how OpenAI's SDKs send their key."""

    keyword = "Bearer"


def openai_exception_handler(exc, context):
    """The studio's one error mapping (finetune_studio.api), reshaped as OpenAI's error object."""
    response = exception_handler(exc, context)
    if response is None:
        return None
    body = response.data if isinstance(response.data, dict) else {"detail": str(response.data)}
    message = str(body.get("detail") or "the request failed")
    param = getattr(exc, "param", None)
    errors = body.get("errors")
    if param is None and isinstance(errors, dict) and errors:
        param, first = _first_error(errors)
        message = message if isinstance(exc, OpenAIRequestInvalid) else f"{param}: {first}"
    if response.status_code == 401:
        message = f"{message} Send a studio API token (your account's token page) as the OpenAI key."
    response.data = {
        "error": {
            "message": message,
            "type": "server_error" if response.status_code >= 500 else "invalid_request_error",
            "param": param,
            "code": getattr(exc, "openai_code", None) or _CODES.get(response.status_code),
        }
    }
    return response


def _first_error(errors: dict, prefix: str = "") -> tuple[str, str]:
    """(dotted parameter, its first message) of DRF's nested field errors."""
    name, value = next(iter(errors.items()))
    if isinstance(value, dict) and value:
        return _first_error(value, f"{prefix}{name}.")
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return _first_error(value[0], f"{prefix}{name}.")
    first = value[0] if isinstance(value, list) and value else value
    return f"{prefix}{name}", str(first)


class OpenAIView(APIView):
    authentication_classes = [BearerTokenAuthentication, TokenAuthentication]
    parser_classes = [JSONParser]

    def get_exception_handler(self):
        return openai_exception_handler


def _metadata_filter(request) -> dict | None:
    """OpenAI's ``metadata[key]=value`` query parameters; ``metadata=null``: jobs without metadata ({})."""
    if request.query_params.get("metadata") == "null":
        return {}
    wanted = {
        name[len("metadata[") : -1]: value
        for name, value in request.query_params.items()
        if name.startswith("metadata[") and name.endswith("]")
    }
    return wanted or None


def _query(serializer_class, request) -> dict:
    given = serializer_class(data=request.query_params)
    given.is_valid(raise_exception=True)
    return given.validated_data


@extend_schema(exclude=True)
class FileListView(OpenAIView):
    parser_classes = [MultiPartParser, FormParser]

    def initialize_request(self, request, *args, **kwargs):
        if request.method == "POST":
            limit_dataset_uploads(request)
        return super().initialize_request(request, *args, **kwargs)

    def get(self, request):
        query = _query(FileListQuerySerializer, request)
        if query.get("purpose", services.FINE_TUNE) != services.FINE_TUNE:
            return Response(list_object(selectors.Page(items=[], has_more=False), file_object))
        page = selectors.files_page(
            user=request.user, after=query.get("after"), limit=query["limit"], descending=query["order"] == "desc"
        )
        return Response(list_object(page, file_object))

    def post(self, request):
        try:  # the upload handler counts the bytes while the body is parsed (request.data)
            given = FileUploadSerializer(data=request.data)
            given.is_valid(raise_exception=True)
            dataset = services.file_create(
                owner=request.user,
                uploaded_file=given.validated_data["file"],
                purpose=given.validated_data["purpose"],
            )
        except objects.UploadTooLarge as exc:
            raise RequestTooLarge(f"The file is larger than the limit of {exc.max_bytes} bytes.") from None
        except objects.StorageError as exc:
            raise ServiceUnavailable(f"Storage failed while saving the file; nothing was recorded: {exc}") from None
        return Response(file_object(dataset), status=status.HTTP_200_OK)


@extend_schema(exclude=True)
class FileDetailView(OpenAIView):
    def get(self, request, file_id):
        results = selectors.results_file_get(user=request.user, file_id=file_id)
        if results is not None:
            return Response(results_file_object(results))
        return Response(file_object(selectors.file_get(user=request.user, file_id=file_id)))

    def delete(self, request, file_id):
        if selectors.results_file_get(user=request.user, file_id=file_id) is not None:
            raise Conflict(f"{file_id} is read from its job's record: it cannot be deleted on its own")
        dataset = selectors.file_get(user=request.user, file_id=file_id)
        try:
            job_services.dataset_delete(dataset_id=dataset.id)
        except objects.StorageError as exc:
            raise ServiceUnavailable(f"Storage failed while deleting the file; it is kept: {exc}") from None
        return Response({"id": file_id, "object": "file", "deleted": True})


class AnyAccept(DefaultContentNegotiation):
    """The file's bytes whatever the client accepts (OpenAI's SDK asks for ``application/binary``); errors as JSON."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


@extend_schema(exclude=True)
class FileContentView(OpenAIView):
    content_negotiation_class = AnyAccept

    def get(self, request, file_id):
        results = selectors.results_file_get(user=request.user, file_id=file_id)
        if results is not None:
            return HttpResponse(results.content, content_type="text/csv")
        dataset = selectors.file_get(user=request.user, file_id=file_id)
        chunks = objects.bucket("datasets").iter_chunks(job_services.dataset_key(dataset))
        try:
            first = next(chunks, b"")  # a missing object is a clear 503 now, not a cut-off download later
        except objects.StorageError as exc:
            raise ServiceUnavailable(f"Storage failed while reading the file: {exc}") from None
        response = StreamingHttpResponse(
            response_chunks(request, _prepend(first, chunks)), content_type="application/octet-stream"
        )
        response["Content-Length"] = str(dataset.size_bytes)
        return response


def _prepend(first, rest):
    if first:
        yield first
    yield from rest


@extend_schema(exclude=True)
class JobListView(OpenAIView):
    def get(self, request):
        query = _query(ListQuerySerializer, request)
        page = selectors.fine_tuning_jobs_page(
            user=request.user, after=query.get("after"), limit=query["limit"], metadata=_metadata_filter(request)
        )
        return Response(list_object(page, job_object))

    def post(self, request):
        given = JobCreateSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        body = given.validated_data
        training_file = selectors.job_file_get(user=request.user, file_id=body["training_file"], param="training_file")
        validation_file = None
        if body.get("validation_file"):
            validation_file = selectors.job_file_get(
                user=request.user, file_id=body["validation_file"], param="validation_file"
            )
        job = services.fine_tuning_job_create(
            owner=request.user,
            model=body["model"],
            fine_tuned=selectors.fine_tuned_model_get(user=request.user, name=body["model"]),
            training_file=training_file,
            validation_file=validation_file,
            hyperparameters=body["hyperparameters"],
            suffix=body.get("suffix") or "",
            seed=body.get("seed"),
            metadata=body.get("metadata"),
            method=body["method_type"],
        )
        job.refresh_from_db()
        return Response(job_object(job))


@extend_schema(exclude=True)
class JobDetailView(OpenAIView):
    def get(self, request, job_id):
        return Response(job_object(selectors.fine_tuning_job_get(user=request.user, job_id=job_id)))


@extend_schema(exclude=True)
class JobCancelView(OpenAIView):
    def post(self, request, job_id):
        job = selectors.fine_tuning_job_get(user=request.user, job_id=job_id)
        return Response(job_object(job_services.job_cancel(job_id=job.id)))


@extend_schema(exclude=True)
class JobEventsView(OpenAIView):
    def get(self, request, job_id):
        job = selectors.fine_tuning_job_get(user=request.user, job_id=job_id)
        query = _query(ListQuerySerializer, request)
        page = selectors.fine_tuning_job_events(job=job, after=query.get("after"), limit=query["limit"])
        return Response(list_object(page, event_object))


@extend_schema(exclude=True)
class JobCheckpointsView(OpenAIView):
    def get(self, request, job_id):
        job = selectors.fine_tuning_job_get(user=request.user, job_id=job_id)
        query = _query(ListQuerySerializer, request)
        page = selectors.fine_tuning_job_checkpoints(job=job, after=query.get("after"))
        return Response(list_object(page, checkpoint_object))


@extend_schema(exclude=True)
class ModelListView(OpenAIView):
    def get(self, request):
        bases = [base_model_object(name) for name in selectors.base_model_names()]
        tuned = [model_object(model) for model in selectors.fine_tuned_models(user=request.user)]
        return Response({"object": "list", "data": tuned + bases})


@extend_schema(exclude=True)
class ModelDetailView(OpenAIView):
    def get(self, request, model):
        found = selectors.fine_tuned_model_get(user=request.user, name=model)
        if found is not None:
            return Response(model_object(found))
        if model in selectors.base_model_names():
            return Response(base_model_object(model))
        raise exceptions.NotFound(f"No such model: {model[:120]!r}.")

    def delete(self, request, model):
        found = selectors.fine_tuned_model_get(user=request.user, name=model)
        if found is None:
            if model in selectors.base_model_names():
                raise exceptions.PermissionDenied(
                    f"{model!r} is one of the studio's base models: only fine-tuned models can be deleted here"
                )
            raise exceptions.NotFound(f"No such model: {model[:120]!r}.")
        try:
            model_services.model_delete(model_id=found.id)
        except objects.StorageError as exc:
            raise ServiceUnavailable(f"Storage failed while deleting the model's files; it is kept: {exc}") from None
        return Response({"id": model, "object": "model", "deleted": True})


class _ChatView(OpenAIView):
    """One answer of a registry version or a base, whole or streamed as the model generates it: the subclasses
    read the request (``request_serializer``) and shape the answer and its events."""

    request_serializer: type

    def post(self, request):
        given = self.request_serializer(data=request.data)
        given.is_valid(raise_exception=True)
        body = given.validated_data
        asked = {
            "user": request.user,
            "target": selectors.chat_target_get(user=request.user, model=body["model"]),
            **{key: body[key] for key in ("messages", "options", "tools", "schema", "single_call")},
        }
        if not body["stream"]:
            return Response(self.answer_object(services.chat_completion_create(**asked), body))
        stream = services.chat_completion_stream(**asked)
        # The first piece is read before answering: a model that cannot be asked at all is a plain error response.
        first = next(stream.pieces)
        stream = replace(stream, pieces=_prepend(first, stream.pieces))
        # Handed over piece by piece under ASGI too (Django would collect a sync iterator whole first).
        response = StreamingHttpResponse(
            response_chunks(request, self.event_stream(stream, body)), content_type="text/event-stream"
        )
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"  # a proxy in front must pass the pieces on as they come
        return response


@extend_schema(exclude=True)
class ChatCompletionsView(_ChatView):
    """OpenAI's chat completions; ``stream: true`` sends ``chat.completion.chunk`` events ending in ``[DONE]``
    (whole, with tools: the calls are read from the whole answer)."""

    request_serializer = ChatCompletionSerializer

    def answer_object(self, completion, body) -> dict:
        return chat_completion_object(completion)

    def event_stream(self, stream, body):
        return _event_stream(chat_completion_events(stream, include_usage=body["include_usage"]))


@extend_schema(exclude=True)
class ResponsesView(_ChatView):
    """OpenAI's Responses API on the same chat: a ``response`` object, or its typed events. Nothing is stored."""

    request_serializer = ResponseCreateSerializer

    def answer_object(self, completion, body) -> dict:
        return response_object(completion, body["echo"])

    def event_stream(self, stream, body):
        return _typed_event_stream(response_events(stream, body["echo"]))


def _typed_event_stream(events):
    try:
        for event in events:
            yield f"event: {event['type']}\ndata: {json.dumps(event, ensure_ascii=False)}\n\n".encode()
    finally:
        events.close()


def _event_stream(events):
    try:
        for event in events:
            yield f"data: {json.dumps(event, ensure_ascii=False)}\n\n".encode()
            if "error" in event:
                return
        yield b"data: [DONE]\n\n"
    finally:
        events.close()  # a client that went away stops the generation


@extend_schema(exclude=True)
class UnknownEndpointView(OpenAIView):
    """Anything else under /openai/v1/: a 404 in OpenAI's shape that lists what is offered."""

    def _answer(self, request, *args, **kwargs):
        raise exceptions.NotFound(
            f"{request.method} /{kwargs.get('rest', '')} is not offered by the studio's OpenAI-compatible API; "
            f"it offers {SUPPORTED}."
        )

    get = post = put = patch = delete = _answer
