"""Outbound requests go to settings.OLLAMA_URL only, and a redirect from there is not followed."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from evaluations.models import Evaluation
from inference.ollama import OllamaClient, OllamaRequestRefused
from tests.support.ollama_server import OllamaServer

pytestmark = pytest.mark.django_db

URL_FIELDS = ["ollama_url", "url", "base_url", "host", "OLLAMA_URL", "endpoint", "server"]


class Redirector:
    """Answers every request with a redirect to ``target``: an operator-set URL that moved or was hijacked."""

    def __init__(self, target: str, status: int = 302):
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _redirect(self):
                outer.hits += 1
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                self.send_response(status)
                self.send_header("Location", target + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_HEAD = _redirect

            def log_message(self, *args):
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def stop(self):
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def ollama(settings, world):
    server = OllamaServer().start()
    server.add_model("tiny", answer="pay")
    server.add_model(world.model.name, answer="pay")
    settings.OLLAMA_URL = server.url
    settings.EVALUATION_RETRY_BACKOFF_MS = 5
    yield server
    server.stop()


@pytest.fixture
def attacker():
    server = OllamaServer().start()
    server.add_model("tiny", answer="law")
    yield server
    server.stop()


def test_no_request_field_can_point_an_evaluation_at_another_server(
    world, alice_api, ollama, attacker, django_capture_on_commit_callbacks
):
    body = {"test_set_path": world.dataset.path, "base_model_name": "tiny", "fine_tuned_name": world.model.name}
    body.update(dict.fromkeys(URL_FIELDS, attacker.url))
    body["options"] = {"ollama_url": attacker.url, "host": attacker.url}
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_api.post(f"/api/v1/models/{world.model.id}/evaluate", body, format="json")
    assert response.status_code in (202, 400), response.content[:300]
    assert attacker.requests == []
    if response.status_code == 202:
        evaluation = Evaluation.objects.get(id=response.json()["evaluation_id"])
        assert evaluation.status == "completed", evaluation.error_message
        assert len(ollama.chat_requests()) > 0


def test_no_request_field_can_point_a_deploy_at_another_server(world, alice_api, ollama, attacker):
    body = dict.fromkeys(URL_FIELDS, attacker.url)
    response = alice_api.post(f"/api/v1/models/{world.model.id}/deploy", body, format="json")
    if response.status_code == 404:
        pytest.skip("this installation has no deploy endpoint")
    assert response.status_code == 400, response.content[:300]
    assert attacker.requests == []


def test_the_evaluation_page_lists_models_from_settings_only(world, alice_browser, ollama, attacker):
    response = alice_browser.get("/evaluations/new/", {"ollama_url": attacker.url, "url": attacker.url})
    assert response.status_code == 200
    assert attacker.requests == []
    assert any(request.path == "/api/tags" for request in ollama.requests)


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_the_ollama_client_refuses_to_follow_redirects(attacker, status):
    redirector = Redirector(attacker.url, status)
    client = OllamaClient(redirector.url, timeout=5, max_retries=0)
    try:
        with pytest.raises(OllamaRequestRefused, match="redirect"):
            client.list_models()
        with pytest.raises(OllamaRequestRefused, match="redirect"):
            client.chat(model="tiny", prompt="hello", options={})
        with pytest.raises(OllamaRequestRefused, match="redirect"):
            client.show("tiny")
    finally:
        client.close()
        redirector.stop()
    assert redirector.hits == 3
    assert attacker.requests == []


def test_an_evaluation_against_a_redirecting_ollama_fails_clearly_without_following(
    world, alice_api, settings, attacker, django_capture_on_commit_callbacks
):
    redirector = Redirector(attacker.url, 302)
    settings.OLLAMA_URL = redirector.url
    settings.EVALUATION_RETRY_BACKOFF_MS = 5
    try:
        with django_capture_on_commit_callbacks(execute=True):
            response = alice_api.post(
                f"/api/v1/models/{world.model.id}/evaluate",
                {"test_set_path": world.dataset.path, "base_model_name": "tiny", "fine_tuned_name": "tuned"},
                format="json",
            )
    finally:
        redirector.stop()
    assert response.status_code == 202, response.content[:300]
    evaluation = Evaluation.objects.get(id=response.json()["evaluation_id"])
    assert evaluation.status == "failed"
    assert "redirect" in evaluation.error_message
    assert attacker.requests == []


def test_no_judge_field_can_point_a_judge_at_another_server(world, alice_api, ollama, attacker):
    """A judge is an endpoint by name: a URL in any of its fields, or beside them, is refused before any call."""
    judges = [
        {"endpoint": attacker.url, "model": "tiny"},
        {"endpoint": "ollama", "model": "tiny", **dict.fromkeys(URL_FIELDS[:4], attacker.url)},
    ]
    for judge in judges:
        body = {"test_set_path": world.dataset.path, "base_model_name": "tiny", "task": "generation", "judge": judge}
        response = alice_api.post(f"/api/v1/models/{world.model.id}/evaluate", body, format="json")
        assert response.status_code == 400, (judge, response.content[:300])
        assert "judge" in response.json()["errors"]
    assert attacker.requests == []
