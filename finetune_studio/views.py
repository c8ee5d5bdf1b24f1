from django.conf import settings
from django.core import signing
from django.db import connection
from django.http import Http404, HttpResponseServerError, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.template import loader
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_GET

from .objects import ObjectNotFound, read_local_link
from .streaming import StreamAccess, release_connection, response_chunks, while_allowed


@require_GET
def healthz(request):
    """Database check; with ``?worker=1`` also waits (up to 10 s) for a worker to answer a ping task."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    body = {"status": "ok"}
    if request.GET.get("worker"):
        body["worker"] = _worker_answers()
        if body["worker"] != "ok":
            body["status"] = "degraded"
    return JsonResponse(body, status=200 if body["status"] == "ok" else 503)


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
    """Serves the signed, expiring links that local storage issues in place of S3 presigned URLs."""
    try:
        bucket, key, filename = read_local_link(token)
        size = bucket.size(key)
        chunks = bucket.iter_chunks(key)
    except (signing.BadSignature, ObjectNotFound, KeyError):
        raise Http404("This link is invalid or has expired.") from None
    response = StreamingHttpResponse(response_chunks(request, chunks), content_type="application/octet-stream")
    response["Content-Length"] = str(size)
    response["Content-Disposition"] = content_disposition_header(as_attachment=True, filename=filename)
    response["Cache-Control"] = "private, no-store"
    return response


def page_not_found(request, exception):
    return render(request, "404.html", status=404)


def server_error(request):
    return HttpResponseServerError(loader.get_template("500.html").render())


def user_events(request):
    """The signed-in user's live event stream (SSE): job, model and evaluation updates for their pages."""
    from django.http import HttpResponse
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
            still_allowed=lambda: _still_signed_in(store(session_key=session_key), user_id),
        )
        response.streaming_content = while_allowed(
            response.streaming_content, access, interval=settings.LOG_STREAM_ACCESS_RECHECK_SECONDS
        )
    release_connection()
    return response


def _still_signed_in(session, user_id: int) -> bool:
    from django.contrib.auth import SESSION_KEY, get_user_model

    if session.session_key is None or str(session.get(SESSION_KEY)) != str(user_id):
        return False
    return get_user_model().objects.filter(id=user_id, is_active=True).exists()
