"""GET /api/v1/jobs/:id/logs (SSE, or JSON history), POST the same URL (ingestion), GET …/logs.txt."""

from urllib.parse import unquote

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django_eventstream.utils import add_default_headers
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import exceptions, parsers, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from finetune_studio.api import RequestTooLarge
from finetune_studio.keys import download_filename
from finetune_studio.parsers import JSONParser
from finetune_studio.streaming import StreamAccess, release_connection, session_still_signed_in
from jobs.selectors import job_get

from ..events import job_channel
from ..filters import LogFilter
from ..parsing import InvalidLine
from ..selectors import iter_log_text, log_backlog_start, log_lines, log_stream_of
from ..services import clean_lines, log_lines_append
from ..streaming import job_log_stream
from .serializers import LogAppendResultSerializer, LogHistoryQuerySerializer, LogLineSerializer


class PlainTextParser(parsers.BaseParser):
    media_type = "text/plain"

    def parse(self, stream, media_type=None, parser_context=None) -> str:
        charset = "utf-8"
        if media_type and "charset=" in media_type:
            charset = media_type.split("charset=", 1)[1].split(";")[0].strip() or charset
        try:
            return stream.read().decode(charset)
        except (UnicodeDecodeError, LookupError):
            raise exceptions.ParseError(f"The text/plain body is not valid {charset}.")


def _wants_json(request) -> bool:
    if request.query_params.get("format") == "json":
        return True
    accept = request.META.get("HTTP_ACCEPT", "")
    return "application/json" in accept and "text/event-stream" not in accept


class JobLogsView(APIView):
    """The log of one job: a live SSE stream, its JSON history, and the way in for external runners."""

    parser_classes = [JSONParser, PlainTextParser]

    def perform_content_negotiation(self, request, force=False):
        # EventSource asks for text/event-stream, which no DRF renderer offers; errors still go out as JSON.
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(
        summary="Live log stream (SSE) or, with ?format=json / Accept: application/json, the history",
        description=(
            "SSE: each `logs` event carries many lines `{prev_seq, last_seq, lines:[{seq,timestamp,level,message,"
            "source}], totals}`; its id is `job-<id>:<last seq>`. On connect the last `backlog` lines (default "
            "LOG_STREAM_BACKLOG) are sent, or everything after `Last-Event-ID` / `?lastEventId=job-<id>:<seq>` / "
            "`?after=<seq>`, then live lines. A finished job's stream sends `end` and closes; resuming a finished "
            "job that has nothing more answers 204 (EventSource stops reconnecting). JSON: keyset pages by seq."
        ),
        parameters=[
            OpenApiParameter("format", str, description="`json` for the history"),
            OpenApiParameter("after", int, description="SSE and JSON: lines with seq greater than this"),
            OpenApiParameter("before", int, description="JSON: the last `limit` lines with seq below this"),
            OpenApiParameter("limit", int, description="JSON: lines per page"),
            OpenApiParameter("level", str, description="JSON: DEBUG, INFO, WARN, ERROR (comma-separated)"),
            OpenApiParameter("since", OpenApiTypes.DATETIME),
            OpenApiParameter("until", OpenApiTypes.DATETIME),
            OpenApiParameter("q", str, description="JSON: text contained in the message (any case)"),
            OpenApiParameter("backlog", int, description="SSE: lines replayed on connect"),
        ],
        responses={
            (200, "application/json"): inline_serializer(
                "LogHistory",
                {
                    "job": serializers.IntegerField(),
                    "job_status": serializers.CharField(),
                    "job_finished": serializers.BooleanField(),
                    "results": LogLineSerializer(many=True),
                    "has_more": serializers.BooleanField(),
                    "next": serializers.URLField(allow_null=True),
                    "last_seq": serializers.IntegerField(),
                    "totals": serializers.DictField(child=serializers.IntegerField()),
                    "archived": serializers.BooleanField(),
                },
            ),
            (200, "text/event-stream"): OpenApiTypes.STR,
            204: OpenApiResponse(description="Finished, nothing more"),
        },
    )
    def get(self, request, job_id: int):
        job = job_get(user=request.user, job_id=job_id)
        if _wants_json(request):
            return self._history(request, job)
        return self._stream(request, job)

    @extend_schema(
        summary="Append log lines (external runners)",
        description=(
            "Body: a JSON array of strings or objects `{message, level?, timestamp?, seq?, source?}` (or "
            '`{"lines": [...]}`), or `text/plain`, one line per line (the text form `[HH:MM:SS] [LEVEL] message` '
            "and other common forms give level and time). Lines with `seq` are idempotent: a replayed batch adds "
            "nothing. A malformed batch is refused whole (400, nothing stored). Lines are accepted after the job "
            "finished (runners flush last lines after reporting the end); 409 once the log was archived."
        ),
        request={"application/json": OpenApiTypes.OBJECT, "text/plain": OpenApiTypes.STR},
        responses={201: LogAppendResultSerializer, 200: LogAppendResultSerializer},
    )
    def post(self, request, job_id: int):
        job = job_get(user=request.user, job_id=job_id)
        if job.owner_id != request.user.id:
            raise exceptions.PermissionDenied("Only the job's owner can add log lines.")
        lines = _payload_lines(request.data)
        if len(lines) > settings.LOG_INGEST_MAX_LINES:
            raise RequestTooLarge(f"At most {settings.LOG_INGEST_MAX_LINES} lines per request; send several batches.")
        try:
            cleaned = clean_lines(lines, source="api", strict=True)
        except InvalidLine as exc:
            raise exceptions.ValidationError({"lines": [str(exc)]})
        result = log_lines_append(job_id=job.id, lines=cleaned, source="api")  # LogsArchived: 409 (the handler)
        body = LogAppendResultSerializer(result).data
        return Response(body, status=201 if result.inserted else 200)

    def _history(self, request, job) -> Response:
        query = LogHistoryQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        limit = params.get("limit", settings.LOG_HISTORY_DEFAULT_LIMIT)
        filters = LogFilter(
            levels=params.get("level") or (),
            since=params.get("since"),
            until=params.get("until"),
            text=params.get("q", ""),
        )
        stream = log_stream_of(job.id)
        before = params.get("before")
        found = log_lines(job.id, after=params["after"], before=before, limit=limit + 1, filters=filters, stream=stream)
        has_more = len(found) > limit
        if has_more:
            found = found[1:] if before is not None else found[:limit]
        body = {
            "job": job.id,
            "job_status": job.status,
            "job_finished": job.is_finished,
            "results": LogLineSerializer(found, many=True).data,
            "has_more": has_more,
            "next": None,
            "last_seq": stream.last_seq if stream else 0,
            "totals": stream.totals() if stream else {"lines": 0, "warnings": 0, "errors": 0},
            "archived": bool(stream and stream.is_archived),
        }
        if has_more and found:
            page = request.query_params.copy()
            page.pop("before" if before is None else "after", None)
            if before is None:
                page["after"] = str(found[-1]["seq"])
            else:
                page["before"] = str(found[0]["seq"])
            page["format"] = "json"
            body["next"] = request.build_absolute_uri(f"{request.path}?{page.urlencode()}")
        return Response(body)

    def _stream(self, request, job):
        start, resumed = _start_position(request, job.id, job_channel(job.id))
        stream = log_stream_of(job.id)
        if resumed and job.is_finished and start >= (stream.last_seq if stream else 0):
            return HttpResponse(status=204)  # EventSource stops reconnecting on 204
        events = job_log_stream(job.id, start, _access_check(request, job.id))
        response = StreamingHttpResponse(events, content_type="text/event-stream")
        add_default_headers(response, request=request._request)
        release_connection()
        return response


def _access_check(request, job_id: int) -> StreamAccess:
    """What opened the stream must still hold: the same token (or session), an active user who
    sees the job. Streams with equal grants share one check (1,000 viewers of one job cost one check per interval).
    """
    from django.contrib.auth import get_user_model
    from django.contrib.sessions.backends.base import SessionBase
    from rest_framework.authtoken.models import Token

    user_id = request.user.id
    token_key = request.auth.key if isinstance(request.auth, Token) else None
    session = getattr(request._request, "session", None)
    session_key = session.session_key if isinstance(session, SessionBase) and token_key is None else None

    def still_allowed() -> bool:
        if token_key is not None and not Token.objects.filter(key=token_key, user_id=user_id).exists():
            return False
        # The same check as /events/: the session must still sign in this user (not merely exist).
        if session_key is not None and not session_still_signed_in(type(session), session_key, user_id):
            return False
        user = get_user_model().objects.filter(id=user_id, is_active=True).first()
        if user is None:
            return False
        try:
            job_get(user=user, job_id=job_id)
        except Http404:
            return False
        return True

    return StreamAccess(grant=(user_id, token_key, session_key, job_id), still_allowed=still_allowed)


def _start_position(request, job_id: int, channel: str) -> tuple[int, bool]:
    """(seq after which to send, whether the client resumes a stream it had)."""
    resume = request.META.get("HTTP_LAST_EVENT_ID") or request.query_params.get("lastEventId")
    if resume:
        for part in resume.split(","):
            name, _, value = part.rpartition(":")
            if unquote(name) == channel:
                if not value.isdigit():
                    raise exceptions.ValidationError({"lastEventId": [f"expected {channel}:<seq>, got {part!r}"]})
                return int(value), True
    after = request.query_params.get("after")
    if after not in (None, ""):
        if not after.isdigit():
            raise exceptions.ValidationError({"after": ["must be a whole number (a seq) ≥ 0"]})
        return int(after), False
    backlog = request.query_params.get("backlog")
    lines = settings.LOG_STREAM_BACKLOG
    if backlog not in (None, ""):
        if not backlog.isdigit() or int(backlog) > settings.LOG_STREAM_BACKLOG_MAX:
            raise exceptions.ValidationError(
                {"backlog": [f"must be a whole number from 0 to {settings.LOG_STREAM_BACKLOG_MAX}"]}
            )
        lines = int(backlog)
    return log_backlog_start(job_id, lines), False


def _payload_lines(data) -> list:
    if isinstance(data, str):
        return [line for line in data.splitlines() if line.strip()]
    if isinstance(data, dict) and set(data) == {"lines"}:
        data = data["lines"]
    if not isinstance(data, list):
        raise exceptions.ValidationError(
            'Expected a JSON array of lines (strings or {"message", "level"?, "timestamp"?, "seq"?}), '
            '{"lines": [...]} or a text/plain body.'
        )
    return data


class JobLogsTextView(APIView):
    """The whole log as a text download, streamed in chunks (read from the archive after retention)."""

    def perform_content_negotiation(self, request, force=False):
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(summary="Download the whole log as text", responses={(200, "text/plain"): OpenApiTypes.STR})
    def get(self, request, job_id: int):
        job = job_get(user=request.user, job_id=job_id)
        chunks = iter_log_text(job.id)
        if isinstance(request._request, ASGIRequest):
            content = _async_chunks(chunks)
        else:
            content = (chunk.encode() for chunk in chunks)
        response = StreamingHttpResponse(content, content_type="text/plain; charset=utf-8")
        filename = download_filename(f"job-{job.id}-logs", extension=".txt")
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        response["X-Accel-Buffering"] = "no"
        return response


async def _async_chunks(chunks):
    """Under ASGI a sync iterator would be collected whole before sending: pull it chunk by chunk."""
    pull = sync_to_async(next, thread_sensitive=True)
    while (chunk := await pull(chunks, None)) is not None:
        yield chunk.encode()
