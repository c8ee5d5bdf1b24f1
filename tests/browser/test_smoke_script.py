"""scripts/smoke.sh stays true: run against a live standalone studio, every check passes."""

import os
import shutil
import subprocess

import pytest

from tests.support.processes import ROOT

from .test_journey import BASE_OLLAMA_MODEL, FINE_TUNED_OLLAMA_MODEL, teach_ollama

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("curl") is None, reason="scripts/smoke.sh needs curl, which is not installed"),
]
SCRIPT = ROOT / "scripts" / "smoke.sh"


def _run_smoke(studio_url: str, token: str, **extra: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "STUDIO_URL": studio_url,
        "TOKEN": token,
        "BASE_MODEL": BASE_OLLAMA_MODEL,
        "FINE_TUNED_NAME": FINE_TUNED_OLLAMA_MODEL,
        "TIMEOUT": "90",
        **extra,
    }
    return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=240)


@pytest.fixture
def alice_token(alice):
    from rest_framework.authtoken.models import Token

    return Token.objects.create(user=alice).key


def test_the_smoke_script_passes_every_check_against_a_live_studio(alice_token, studio, ollama):
    teach_ollama(ollama)
    result = _run_smoke(studio, alice_token)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1].endswith("passed, 0 failed")
    assert int(lines[-1].split()[0]) >= 15
    assert not [line for line in lines if line.startswith("FAIL")]
    assert any(line.startswith("PASS  GET /api/v1/jobs/") and "then end" in line for line in lines)
    assert any("significant improvement" in line for line in lines), result.stdout


def test_the_smoke_script_fails_and_says_why_when_the_token_is_wrong(studio):
    result = _run_smoke(studio, "not-a-token", EVALUATE="0")
    assert result.returncode == 1
    assert "FAIL  GET /api/v1/ with the token" in result.stdout
    assert result.stdout.splitlines()[-1] == "2 passed, 1 failed"
