"""What every API endpoint shares: pagination, the error shape, request bodies, ownership."""

import difflib

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.filters import OrderingFilter
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler

from .errors import DomainError
from .ownership import visible_to
from .stream_db import busy_message, pool_exhausted


class StudioPagination(PageNumberPagination):
    """Page numbers and sizes that are not positive integers are a 400 naming the parameter, on every list.

    DRF's own falls back to the default size for ``page_size=-1``, so a client's mistake went unnoticed.
    """

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200

    def paginate_queryset(self, queryset, request, view=None):
        errors = {}
        for param in (self.page_query_param, self.page_size_query_param):
            raw = request.query_params.get(param)
            if raw is not None and raw not in self.last_page_strings and (not raw.isdigit() or int(raw) < 1):
                errors[param] = [f"Must be a positive integer, got {raw!r}."]
        if errors:
            raise exceptions.ValidationError(errors)
        return super().paginate_queryset(queryset, request, view)


class StrictOrderingFilter(OrderingFilter):
    """Like DRF's, but a field outside the view's ``ordering_fields`` is a 400 naming it, not silently ignored.

    Ties break on id, so pages of an ordering by a non-unique field neither repeat nor skip rows.
    """

    def get_ordering(self, request, queryset, view):
        params = request.query_params.get(self.ordering_param)
        if not params:
            return self.get_default_ordering(view)
        fields = [param.strip() for param in params.split(",") if param.strip()]
        allowed = [name for name, _label in self.get_valid_fields(queryset, view, {"request": request})]
        invalid = [field for field in fields if field.lstrip("-") not in allowed]
        if invalid or not fields:
            raise exceptions.ValidationError(
                {
                    self.ordering_param: [
                        f"Unknown ordering field {', '.join(invalid) or params!r}; use one of: "
                        f"{', '.join(allowed)} (prefix '-' for descending)."
                    ]
                }
            )
        if not any(field.lstrip("-") in ("id", "pk") for field in fields):
            fields.append("-id")
        return fields


class RefusesUnknownFields:
    """Request serializers: a body field the serializer does not know is a 400 naming it, not dropped.

    DRF ignores unknown keys, so a misspelt field (``dataset_id`` for ``dataset``, ``hyperparameter`` for
    ``hyperparameters``) created a job with the defaults and the client never knew. Each unknown field gets
    its own message, with the accepted fields or the one it most likely meant; the other fields' errors come
    in the same answer. Read-only fields count as known, so a body read from the API can be sent back.
    Subclasses word the message for their endpoint with ``unknown_field_error``.
    """

    MAX_REPORTED = 20

    def to_internal_value(self, data):
        unknown = self._unknown_fields(data)
        try:
            value = super().to_internal_value(data)
        except exceptions.ValidationError as invalid:
            if not unknown:
                raise
            detail = (
                invalid.detail
                if isinstance(invalid.detail, dict)
                else {api_settings.NON_FIELD_ERRORS_KEY: invalid.detail}
            )
            raise exceptions.ValidationError({**self._unknown_errors(unknown), **detail}) from None
        if unknown:
            raise exceptions.ValidationError(self._unknown_errors(unknown))
        return value

    def unknown_field_error(self, name: str) -> str:
        accepted = [field for field, declared in self.fields.items() if not declared.read_only]
        guess = difflib.get_close_matches(name, accepted, n=1, cutoff=0.6)
        if guess:
            return f"Unknown field: did you mean {guess[0]!r}?"
        return f"Unknown field; this endpoint takes: {', '.join(accepted)}."

    def _unknown_fields(self, data) -> list[str]:
        keys = data.keys() if hasattr(data, "keys") else ()
        return sorted(str(key) for key in keys if key not in self.fields)[: self.MAX_REPORTED]

    def _unknown_errors(self, unknown: list[str]) -> dict[str, list[str]]:
        return {name: [self.unknown_field_error(name)] for name in unknown}


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


class StudioBusy(ServiceUnavailable):
    """Every pooled database connection was in use for DB_POOL_TIMEOUT: load shed, the database is fine."""

    default_code = "busy"

    def __init__(self):
        super().__init__(busy_message("every database connection is in use"))
        self.wait = settings.BUSY_RETRY_AFTER_SECONDS  # DRF sends it as Retry-After


def exception_handler(exc, context):
    """One error shape: ``{"detail": "...", "errors": {field: [messages]}}`` (errors only for field problems).

    A lost or refused database connection (a PostgreSQL restart, a cut connection, the pool timing out) is
    an outage, not a bug: it answers 503 "retry", so clients that retry on 503 (log shippers with seqs, the
    CLI) resend safely, where a 500 would tell them the request itself was wrong. A pool timeout while every
    connection was busy is load, not an outage: 503 "busy" with Retry-After.
    """
    if isinstance(exc, DomainError) and not isinstance(exc, Http404):
        return _domain_error_response(exc)  # not-found ones answer as every 404 does (below): nothing to learn
    if isinstance(exc, OperationalError | InterfaceError):
        exc = StudioBusy() if pool_exhausted(exc) else DatabaseUnavailable()
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
