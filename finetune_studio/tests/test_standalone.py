"""Standalone mode end to end: one uvicorn process with the in-process worker, no services."""

import time

import requests

from finetune_studio.objects import bucket
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

        payload = bytes(range(256)) * 12_000  # 3 MiB: several chunks through the async body
        bucket("models").put_bytes("users/1/models/1/weights.bin", payload)
        link = bucket("models").presigned_url("users/1/models/1/weights.bin", filename="weights.bin")
        download = requests.get(f"{base_url}{link}", timeout=15)
        assert download.status_code == 200 and download.content == payload
        assert download.headers["Content-Length"] == str(len(payload))
        assert download.headers["Content-Disposition"] == 'attachment; filename="weights.bin"'
        resumed = requests.get(f"{base_url}{link}", headers={"Range": f"bytes={len(payload) - 1_500_000}-"}, timeout=15)
        assert resumed.status_code == 206 and resumed.content == payload[-1_500_000:]
        assert resumed.headers["Content-Range"] == f"bytes {len(payload) - 1_500_000}-{len(payload) - 1}/{len(payload)}"


TASK_CHATTER = ("Sending due task", "succeeded in", "] received")


def _console_after_idle(tmp_path, name: str, *, until_chatter: bool, **env_extra) -> str:
    """What an idle standalone server prints while beat sends log aggregation every second."""
    log_path = tmp_path / f"{name}.log"
    env = service_env(VAR_DIR=str(tmp_path / name), LOG_LEVEL="INFO", LOG_AGGREGATION_INTERVAL_SECONDS="1", **env_extra)
    with asgi_server(env=env, log_path=log_path):
        deadline = time.monotonic() + (15 if until_chatter else 3.5)
        while time.monotonic() < deadline:
            if until_chatter and all(line in log_path.read_text() for line in TASK_CHATTER):
                break
            time.sleep(0.2)
    return log_path.read_text()


def test_an_idle_standalone_console_is_quiet_unless_asked_to_be_verbose(transactional_db, local_storage, tmp_path):
    verbose = _console_after_idle(tmp_path, "verbose", until_chatter=True, STANDALONE_TASK_LOGS="true")
    assert all(line in verbose for line in TASK_CHATTER), verbose[-2000:]  # the lines exist, and are seen here

    quiet = _console_after_idle(tmp_path, "quiet", until_chatter=False)
    assert "In-process Celery worker" in quiet  # the console still says what started
    assert [line for line in quiet.splitlines() if any(chatter in line for chatter in TASK_CHATTER)] == []
