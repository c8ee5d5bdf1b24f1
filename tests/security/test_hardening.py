"""Deployment hardening: CSRF on session writes, secure headers, link lifetimes, no secret in errors."""

import logging
import subprocess
import sys
from urllib.parse import parse_qs, urlparse

import pytest
from django.conf import settings as django_settings
from django.test import Client
from rest_framework.authtoken.models import Token

from tests.support.processes import ROOT

from .matrix import API_COLLECTION_WRITES, API_OBJECT_ENDPOINTS, PAGE_FORMS, PAGE_OBJECT_ENDPOINTS
from .requests import send

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice_session_without_csrf(alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    return client


def test_every_session_authenticated_write_needs_a_csrf_token(world, alice_session_without_csrf):
    """Pages and API alike: a cookie-only request from another site must not change anything."""
    client = alice_session_without_csrf
    ids = world.ids()
    answers = {}
    for row in [row for row in API_OBJECT_ENDPOINTS + API_COLLECTION_WRITES if row.is_write]:
        answers[f"API {row.name}"] = send(client, row, ids, content_type="application/json").status_code
    for row in [row for row in PAGE_OBJECT_ENDPOINTS + PAGE_FORMS if row.is_write]:
        answers[f"page {row.name}"] = client.post(row.url(ids), row.data or {}).status_code
    answers["logout"] = client.post("/accounts/logout/").status_code
    assert answers == dict.fromkeys(answers, 403)


def test_the_same_writes_pass_csrf_with_the_token(world, alice):
    """The control: the 403s above are CSRF's, not something else's."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    client.get("/jobs/")
    token = client.cookies["csrftoken"].value
    response = client.post(f"/jobs/{world.running_job.id}/cancel/", {"csrfmiddlewaretoken": token})
    assert response.status_code in (200, 302)


def test_pages_and_api_send_the_secure_headers(world, alice_browser, alice_api):
    for response in (
        alice_browser.get("/"),
        alice_browser.get(f"/models/{world.model.id}/"),
        alice_api.get("/api/v1/"),
    ):
        assert response["X-Frame-Options"] == "DENY"
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["Referrer-Policy"] == "same-origin"


def test_https_deployments_send_hsts_and_secure_cookies(settings, alice_browser):
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    response = alice_browser.get("/", secure=True)
    assert response["Strict-Transport-Security"].startswith("max-age=31536000")


def test_deploy_https_switches_on_hsts_secure_cookies_and_redirects(tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        "VAR_DIR": str(tmp_path),
        "DEPLOY_HTTPS": "true",
        "SECRET_KEY": "s" * 60,
        "DJANGO_SETTINGS_MODULE": "finetune_studio.settings",
    }
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.SECURE_HSTS_SECONDS, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_SSL_REDIRECT)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["31536000", "True", "True", "True"]


def _expires(url: str) -> int:
    return int(parse_qs(urlparse(url).query)["X-Amz-Expires"][0])


def test_presigned_links_never_outlive_the_configured_ttl(world, alice_api, settings):
    settings.PRESIGNED_URL_TTL = 600
    links = alice_api.get(f"/api/v1/models/{world.model.id}").json()["download_links"]
    urls = [links["lora_adapters"], *links["files"].values()]
    assert urls and all(_expires(url) == 600 for url in urls)

    from finetune_studio.objects import bucket

    asked_for_more = bucket("models").presigned_url(
        world.model.storage_path + "metrics.json", filename="m.json", expires_in=7 * 24 * 3600
    )
    assert _expires(asked_for_more) == 600


SERVER_ERROR_SECRETS = ("SECRET_KEY", "S3_SECRET_ACCESS_KEY")


def test_a_server_error_shows_no_secret_and_logs_no_token(world, alice, settings, monkeypatch, caplog):
    settings.DEBUG = False
    token = Token.objects.create(user=alice).key

    def explode(*args, **kwargs):
        raise RuntimeError("storage exploded")

    monkeypatch.setattr("models_app.selectors.model_list", explode)
    client = Client(raise_request_exception=False)
    with caplog.at_level(logging.INFO):
        api = client.get("/api/v1/models/", HTTP_AUTHORIZATION=f"Token {token}")
        client.force_login(alice)
        page = client.get("/models/")
    for response in (api, page):
        assert response.status_code == 500
        body = response.content.decode()
        assert "Traceback" not in body and "storage exploded" not in body
        assert django_settings.SECRET_KEY not in body and token not in body
        assert django_settings.S3_SECRET_ACCESS_KEY not in body or django_settings.S3_SECRET_ACCESS_KEY == "testing"
    logged = "\n".join(
        record.getMessage() + (logging.Formatter().formatException(record.exc_info) if record.exc_info else "")
        for record in caplog.records
    )
    assert "storage exploded" in logged  # the operators do get the error…
    assert token not in logged and django_settings.SECRET_KEY not in logged  # …but not the credentials


def test_the_server_error_page_promises_nothing_it_cannot_know(alice, settings, monkeypatch):
    """The same request fails the same way every time and its work may be half saved: no "nothing was lost"."""
    settings.DEBUG = False

    def explode(*args, **kwargs):
        raise RuntimeError("a fault that happens every time")

    monkeypatch.setattr("models_app.selectors.model_list", explode)
    client = Client(raise_request_exception=False)
    client.force_login(alice)
    pages = [client.get("/models/").content.decode() for _ in range(2)]
    assert pages[0] == pages[1]
    assert "logged for the operators" in pages[0]
    assert "Check whether your last change was saved" in pages[0]
    assert "it will keep failing until the fault is fixed" in pages[0]
    assert "Nothing you submitted was lost" not in pages[0] and "try again in a moment" not in pages[0]


def test_unknown_pages_are_a_plain_404_without_debug_details(settings, alice_browser):
    settings.DEBUG = False
    response = alice_browser.get("/no/such/page/")
    assert response.status_code == 404
    assert b"urlpatterns" not in response.content and b"Traceback" not in response.content
