"""What every page and endpoint shares: 401/404 shapes, the core pages, the API docs, clean migrations."""

import subprocess
import sys

import pytest


def test_anonymous_api_request_gets_401_with_detail(anon_api):
    response = anon_api.get("/api/v1/")
    assert response.status_code == 401
    assert response.json()["detail"]


def test_unknown_page_is_a_friendly_404(alice_browser, settings):
    settings.DEBUG = False
    response = alice_browser.get("/no/such/page/")
    assert response.status_code == 404
    assert b"Back to the dashboard" in response.content


@pytest.mark.parametrize("path", ["/api/docs/", "/admin/login/", "/healthz"])
def test_core_pages_render(alice_browser, path):
    assert alice_browser.get(path).status_code == 200


def test_the_api_docs_page_loads_swagger_ui_from_the_studio_itself(alice_browser):
    import re

    from django.contrib.staticfiles import finders

    page = alice_browser.get("/api/docs/").content.decode()
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing from another host
    for name, ext in (("swagger-ui-bundle", "js"), ("swagger-ui-standalone-preset", "js"), ("swagger-ui", "css")):
        assert re.search(rf'"/static/drf_spectacular_sidecar/swagger-ui-dist/{name}(\.[0-9a-f]+)?\.{ext}"', page)
        assert finders.find(f"drf_spectacular_sidecar/swagger-ui-dist/{name}.{ext}") is not None


def test_api_docs_and_schema_are_served(alice_api):
    schema = alice_api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    assert schema.json()["info"]["title"] == "Finetune Studio API"


def test_makemigrations_is_clean():
    result = subprocess.run(
        [sys.executable, "manage.py", "makemigrations", "--check", "--dry-run"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"DJANGO_SETTINGS_MODULE": "finetune_studio.settings_test", **__import__("os").environ},
    )
    assert result.returncode == 0, result.stdout + result.stderr
