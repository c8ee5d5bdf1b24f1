"""Open SSE streams end soon after their access is revoked (a real uvicorn: streams need ASGI)."""

import json
import time
from pathlib import Path

import pytest
import requests
from rest_framework.authtoken.models import Token

from tests.support.processes import asgi_server, service_env

from .world import build_world

pytestmark = pytest.mark.django_db(transaction=True)

RECHECK_SECONDS = 1
READ_TIMEOUT = RECHECK_SECONDS + 4  # an idle open stream sends nothing for 20 s: a read timeout means "still open"


def _open_stream(base: str, job_id: int, headers: dict) -> requests.Response:
    response = requests.get(
        f"{base}/api/v1/jobs/{job_id}/logs",
        headers={**headers, "Accept": "text/event-stream"},
        stream=True,
        timeout=(5, READ_TIMEOUT),
    )
    assert response.status_code == 200, response.text[:300]
    return response


def _seconds_until_closed(chunks, limit: float) -> float:
    """Read on until the server ends the body; inf when it is still open at ``limit`` (or a read times out)."""
    started = time.monotonic()
    try:
        for _ in chunks:
            if time.monotonic() - started > limit:
                return float("inf")
    except requests.exceptions.ChunkedEncodingError:
        pass
    except requests.exceptions.ConnectionError as exc:  # requests reports a read timeout mid-body this way
        if "timed out" in str(exc):
            return float("inf")
        raise
    return time.monotonic() - started


def test_revoking_a_token_ends_the_open_log_stream_at_once(alice):
    world = build_world(alice)
    token = Token.objects.create(user=alice)
    env = service_env(LOG_STREAM_ACCESS_RECHECK_SECONDS=str(RECHECK_SECONDS))
    with asgi_server(env=env, log_path=Path("/tmp/reliab_revocation.log")) as base:
        kept = _open_stream(base, world.running_job.id, {"Authorization": f"Token {token.key}"})
        chunks = kept.iter_content(chunk_size=None)
        received = b""
        for chunk in chunks:
            received += chunk
            if b"stream-open" in received:
                break
        token.delete()
        closed_after = _seconds_until_closed(chunks, limit=READ_TIMEOUT)
        kept.close()
        assert closed_after <= RECHECK_SECONDS + 3
        summary = {"scenario": "token revoked on an open SSE stream", "closed_after_s": round(closed_after, 2)}
        print("FAULTS", json.dumps(summary))
        again = requests.get(
            f"{base}/api/v1/jobs/{world.running_job.id}/logs",
            headers={"Authorization": f"Token {token.key}", "Accept": "text/event-stream"},
            timeout=5,
        )
        assert again.status_code == 401


def test_an_untouched_stream_stays_open(alice):
    """The control: streams are not closed by the re-check itself."""
    world = build_world(alice)
    token = Token.objects.create(user=alice)
    env = service_env(LOG_STREAM_ACCESS_RECHECK_SECONDS=str(RECHECK_SECONDS))
    with asgi_server(env=env) as base:
        stream = _open_stream(base, world.running_job.id, {"Authorization": f"Token {token.key}"})
        assert _seconds_until_closed(stream.iter_content(chunk_size=None), limit=3 * RECHECK_SECONDS) == float("inf")
        stream.close()


@pytest.mark.parametrize("stream_path", ["/events/", "/api/v1/jobs/{job}/logs"])
def test_signing_out_ends_an_open_stream_opened_by_the_session(alice, stream_path):
    """The page's event stream and a job's log stream watched from its page: one check of the session."""
    from django.contrib.sessions.models import Session
    from django.test import Client

    world = build_world(alice)
    browser = Client()
    browser.force_login(alice)
    session_key = browser.cookies["sessionid"].value
    env = service_env(LOG_STREAM_ACCESS_RECHECK_SECONDS=str(RECHECK_SECONDS))
    with asgi_server(env=env) as base:
        stream = requests.get(
            base + stream_path.format(job=world.running_job.id),
            cookies={"sessionid": session_key},
            headers={"Accept": "text/event-stream"},
            stream=True,
            timeout=(5, READ_TIMEOUT),
        )
        assert stream.status_code == 200
        chunks = stream.iter_content(chunk_size=None)
        received = b""
        for chunk in chunks:
            received += chunk
            if b"stream-open" in received:
                break
        Session.objects.filter(session_key=session_key).delete()  # what signing out does
        closed_after = _seconds_until_closed(chunks, limit=READ_TIMEOUT)
        stream.close()
    assert closed_after <= RECHECK_SECONDS + 3
