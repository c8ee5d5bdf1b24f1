"""What every API endpoint shares: pagination, the error shape, ownership."""

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from .errors import DomainError
from .ownership import visible_to


class StudioPagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200


class RequestTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "Request body too large."
    default_code = "too_large"


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The object is not in a state that allows this."
    default_code = "conflict"


class ServiceUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "A backing service is unavailable; try again shortly."
    default_code = "service_unavailable"


class DatabaseUnavailable(ServiceUnavailable):
    default_detail = "The database is unavailable (connection lost or refused); retry the request shortly."
    default_code = "database_unavailable"


def exception_handler(exc, context):
    """One error shape: ``{"detail": "...", "errors": {field: [messages]}}`` (errors only for field problems).

    A lost or refused database connection (a PostgreSQL restart, a cut connection, the pool timing out) is
    an outage, not a bug: it answers 503 "retry", so clients that retry on 503 (log shippers with seqs, the
    CLI) resend safely, where a 500 would tell them the request itself was wrong.
    """
    if isinstance(exc, DomainError) and not isinstance(exc, Http404):
        return _domain_error_response(exc)  # not-found ones answer as every 404 does (below): nothing to learn
    if isinstance(exc, OperationalError | InterfaceError):
        exc = DatabaseUnavailable()
    elif isinstance(exc, RequestDataTooBig):
        exc = RequestTooLarge(str(exc) or None)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, RecursionError):
        # DRF's parsers turn only ValueError into a 400; a deeply nested JSON body exhausts the stack instead.
        exc = exceptions.ParseError("The request body is nested too deeply.")
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        response.data = _validation_body(exc.detail)
    elif isinstance(response.data, dict) and "detail" not in response.data:
        response.data = {"detail": str(exc), **response.data}
    elif not isinstance(response.data, dict):
        response.data = {"detail": response.data}
    return response


def _domain_error_response(exc: DomainError) -> Response:
    """The one mapping of the apps' domain exceptions: their status, their message, their field errors."""
    body = {"detail": str(exc)}
    if exc.errors:
        body["errors"] = {
            field: messages if isinstance(messages, (list, dict)) else [str(messages)]
            for field, messages in exc.errors.items()
        }
    return Response(body, status=exc.status_code)


def _validation_body(detail) -> dict:
    if isinstance(detail, dict):
        non_field = detail.get("non_field_errors")
        message = str(non_field[0]) if non_field else _first_message(detail)
        return {"detail": message, "errors": detail}
    if isinstance(detail, list):
        return {"detail": "; ".join(str(item) for item in detail) or "Invalid input."}
    return {"detail": str(detail)}


def _first_message(detail: dict) -> str:
    for field, messages in detail.items():
        if isinstance(messages, list) and messages and not isinstance(messages[0], (dict, list)):
            return f"{field}: {messages[0]}"
        if isinstance(messages, str):
            return f"{field}: {messages}"
    return "Invalid input."


def error_response(message: str, *, status_code: int = 400, errors: dict | None = None) -> Response:
    body = {"detail": message}
    if errors:
        body["errors"] = errors
    return Response(body, status=status_code)


class OwnedQuerysetMixin:
    """Viewsets show their owner's rows (404 for anyone else's); staff see all."""

    owner_field = "owner"

    def get_queryset(self):
        return visible_to(super().get_queryset(), self.request.user, owner_field=self.owner_field)
