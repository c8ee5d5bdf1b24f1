import logging

from django.conf import settings
from django.core import signing
from django.db import connection
from django.http import Http404, HttpResponse, HttpResponseServerError, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.template import loader
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_GET

from .objects import ObjectNotFound, StorageError, buckets_missing, read_local_link
from .streaming import StreamAccess, release_connection, response_chunks, session_still_signed_in, while_allowed

logger = logging.getLogger(__name__)


@require_GET
def healthz(request):
    """Database and buckets check; with ``?worker=1`` also waits (up to 10 s) for a worker to answer a ping task."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    body = {"status": "ok", "buckets": _buckets_state()}
    if body["buckets"] != "ok":
        body["status"] = "degraded"
    if request.GET.get("worker"):
        body["worker"] = _worker_answers()
        if body["worker"] != "ok":
            body["status"] = "degraded"
    return JsonResponse(body, status=200 if body["status"] == "ok" else 503)


def _buckets_state() -> str:
    """ "ok", or which buckets are missing (named: the operator must create them), or that storage did not answer."""
    try:
        missing = buckets_missing()
    except StorageError as exc:
        logger.warning("healthz: could not check the buckets: %s", exc)
        return "storage did not answer (see the server log)"
    if not missing:
        return "ok"
    names = ", ".join(f"{alias} ({settings.BUCKETS[alias]})" for alias in missing)
    return f"missing: {names}; run `python manage.py buckets_create`"


def _worker_answers() -> str:
    import secrets
    import time

    from django.core.cache import cache

    from .celery import ping

    token = secrets.token_hex(8)
    try:
        ping.delay(token)
    except Exception as exc:
        return f"broker unreachable: {exc.__class__.__name__}"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if cache.get(f"worker-ping:{token}") == "pong":
            return "ok"
        time.sleep(0.05)
    return "no worker answered within 10 s"


@require_GET
def local_object_download(request, token: str):
    """Serves the signed, expiring links that local storage issues in place of S3 presigned URLs.

    Like S3's, a single ``Range: bytes=…`` is honoured (206 with Content-Range, 416 when it starts past the
    end), so an interrupted download resumes; several ranges or a malformed header get the whole file.
    """
    try:
        bucket, key, filename = read_local_link(token)
        size = bucket.size(key)
    except (signing.BadSignature, ObjectNotFound, KeyError):
        raise Http404("This link is invalid or has expired.") from None
    wanted = _single_byte_range(request.headers.get("Range"), size)
    if wanted == "unsatisfiable":
        response = HttpResponse(status=416)
        response["Content-Range"] = f"bytes */{size}"
        response["Accept-Ranges"] = "bytes"
        return response
    start, end = wanted or (0, size - 1)
    try:
        chunks = _first_bytes(bucket.iter_chunks(key, start=start), end - start + 1)
    except ObjectNotFound:
        raise Http404("This link is invalid or has expired.") from None
    response = StreamingHttpResponse(response_chunks(request, chunks), content_type="application/octet-stream")
    if wanted:
        response.status_code = 206
        response["Content-Range"] = f"bytes {start}-{end}/{size}"
    response["Content-Length"] = str(max(end - start + 1, 0))
    response["Accept-Ranges"] = "bytes"
    response["Content-Disposition"] = content_disposition_header(as_attachment=True, filename=filename)
    response["Cache-Control"] = "private, no-store"
    return response


def _single_byte_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """(first, last) byte of a single ``bytes=`` range, "unsatisfiable", or None for the whole file.

    RFC 9110 §14: a header that does not parse, or asks for several ranges, may be ignored (S3 does too).
    """
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    spec = spec.strip()
    if unit.strip().lower() != "bytes" or "," in spec or "-" not in spec:
        return None
    first, _, last = (part.strip() for part in spec.partition("-"))
    if not first:  # the last N bytes
        if not last.isdigit():
            return None
        length = int(last)
        if length == 0 or size == 0:
            return "unsatisfiable"
        return max(size - length, 0), size - 1
    if not first.isdigit() or (last and not last.isdigit()):
        return None
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        return "unsatisfiable"
    return start, (min(int(last), size - 1) if last else size - 1)


def _first_bytes(chunks, limit: int):
    """The chunks, cut after ``limit`` bytes (the reader is closed there)."""
    try:
        for chunk in chunks:
            if limit <= 0:
                break
            yield chunk[:limit]
            limit -= len(chunk)
    finally:
        close = getattr(chunks, "close", None)
        if close:
            close()


def page_not_found(request, exception):
    return render(request, "404.html", status=404)


def server_error(request):
    return HttpResponseServerError(loader.get_template("500.html").render())


def user_events(request):
    """The signed-in user's live event stream (SSE): job, model and evaluation updates for their pages."""
    from django_eventstream.views import events

    from .events import user_channel

    if not request.user.is_authenticated:
        return HttpResponse("Authentication required.\n", status=401, content_type="text/plain")
    response = events(request, channels=[user_channel(request.user.id)])
    if getattr(response, "is_async", False):
        # Signing out (here or on another device) or being deactivated ends the stream.
        user_id, session_key, store = request.user.id, request.session.session_key, type(request.session)
        access = StreamAccess(
            grant=("session", user_id, session_key),
            still_allowed=lambda: session_still_signed_in(store, session_key, user_id),
        )
        response.streaming_content = while_allowed(
            response.streaming_content, access, interval=settings.LOG_STREAM_ACCESS_RECHECK_SECONDS
        )
    release_connection()
    return response
