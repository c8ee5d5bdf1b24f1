"""Standalone mode end to end: one uvicorn process with the in-process worker, no services."""

import requests

from tests.support.processes import asgi_server, service_env


def test_standalone_server_serves_pages_api_and_runs_tasks_in_process(transactional_db, local_storage, alice, tmp_path):
    from rest_framework.authtoken.models import Token

    token = Token.objects.create(user=alice)
    env = service_env(VAR_DIR=str(tmp_path / "var"))
    with asgi_server(env=env, log_path=tmp_path / "server.log") as base_url:
        login = requests.get(f"{base_url}/accounts/login/", timeout=5)
        assert login.status_code == 200 and "Sign in" in login.text
        assert requests.get(f"{base_url}/api/v1/", timeout=5).status_code == 401
        api = requests.get(f"{base_url}/api/v1/", headers={"Authorization": f"Token {token.key}"}, timeout=5)
        assert api.json()["user"] == "alice"
        assert requests.get(f"{base_url}/static/css/app.css", timeout=5).status_code == 200
        ping = requests.get(f"{base_url}/healthz?worker=1", timeout=15)
        assert ping.json()["worker"] == "ok"
