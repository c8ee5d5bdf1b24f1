"""The studio refuses to start when jobs would be accepted that nothing can run."""

import subprocess
import sys

from tests.support.processes import ROOT

WITHOUT_RUNNER = """
import django, os
from django.conf import settings
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finetune_studio.settings_test")
from finetune_studio import settings_test
settings_test.INSTALLED_APPS = [app for app in settings_test.INSTALLED_APPS if app != "runner"]
django.setup()
from django.core.management import call_command
call_command("check")
"""


def test_the_system_check_fails_when_trainers_run_locally_and_no_runner_is_installed():
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_RUNNER], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "jobs.E001" in result.stderr and "no job runner is installed" in result.stderr


def test_the_system_check_passes_with_the_runner_installed():
    from django.core import checks

    assert [message.id for message in checks.run_checks() if message.id == "jobs.E001"] == []
