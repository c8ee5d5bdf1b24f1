import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from finetune_studio.env import env_bool, env_float, env_int, env_url

ROOT = Path(__file__).resolve().parents[2]


def test_env_bool_rejects_a_typo_naming_the_variable(monkeypatch):
    monkeypatch.setenv("DEBUG", "ture")
    with pytest.raises(ImproperlyConfigured, match="DEBUG='ture' is not a boolean"):
        env_bool("DEBUG", False)


def test_env_int_checks_type_and_bounds(monkeypatch):
    monkeypatch.setenv("PRESIGNED_URL_TTL", "soon")
    with pytest.raises(ImproperlyConfigured, match="PRESIGNED_URL_TTL='soon' is not an integer"):
        env_int("PRESIGNED_URL_TTL", 10)
    monkeypatch.setenv("PRESIGNED_URL_TTL", "999999999")
    with pytest.raises(ImproperlyConfigured, match="above the maximum"):
        env_int("PRESIGNED_URL_TTL", 10, maximum=604800)


def test_env_float_checks_type_and_bounds_and_keeps_the_default_when_unset(monkeypatch):
    monkeypatch.delenv("PARITY_MAX_DROP", raising=False)
    assert env_float("PARITY_MAX_DROP", 0.02, minimum=0.0, maximum=1.0) == 0.02
    monkeypatch.setenv("PARITY_MAX_DROP", "0.05")
    assert env_float("PARITY_MAX_DROP", 0.02, minimum=0.0, maximum=1.0) == 0.05
    for bad, reason in [
        ("two percent", "is not a number"),
        ("-0.1", "below the minimum"),
        ("nan", "below the minimum"),
        ("1.5", "above the maximum"),
    ]:
        monkeypatch.setenv("PARITY_MAX_DROP", bad)
        with pytest.raises(ImproperlyConfigured, match=f"PARITY_MAX_DROP.*{reason}"):
            env_float("PARITY_MAX_DROP", 0.02, minimum=0.0, maximum=1.0)


def test_env_url_requires_a_known_scheme(monkeypatch):
    monkeypatch.setenv("OLLAMA_URL", "ftp://example")
    with pytest.raises(ImproperlyConfigured, match="OLLAMA_URL="):
        env_url("OLLAMA_URL", schemes=("http", "https"))


CONFIGURATION_PREFIXES = ("DATABASE_URL", "REDIS_URL", "S3_", "MINIO_", "STORAGE_BACKEND", "SECRET_KEY", "OLLAMA_")


def _environment_without_configuration() -> dict:
    """The test run's environment minus what settings_test put there: a fresh machine's view."""
    return {k: v for k, v in os.environ.items() if not k.startswith(CONFIGURATION_PREFIXES)}


def _settings_in_subprocess(env: dict, code: str = "from django.conf import settings; settings.DEBUG"):
    clean = _environment_without_configuration()
    clean.update({"DJANGO_SETTINGS_MODULE": "finetune_studio.settings", **env})
    return subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PRESIGNED_URL_TTL": "forever"}, "PRESIGNED_URL_TTL='forever' is not an integer"),
        ({"REDIS_URL": "http://x"}, "REDIS_URL='http://x' must start with"),
        ({"REDIS_URL": "redis://127.0.0.1:6379/0"}, "SECRET_KEY must be set"),
        ({"MINIO_ENDPOINT": "http://minio:9000"}, "MINIO_ENDPOINT"),
        ({"MINIO_ENDPOINT": "minio:9000"}, "S3 storage needs S3_ACCESS_KEY_ID"),
    ],
)
def test_a_bad_value_stops_the_start_with_a_message_naming_the_variable(env, message, tmp_path):
    result = _settings_in_subprocess({"VAR_DIR": str(tmp_path), **env})
    assert result.returncode != 0
    assert message in result.stderr


def test_seed_minio_variables_configure_s3(tmp_path):
    env = {
        "VAR_DIR": str(tmp_path),
        "MINIO_ENDPOINT": "minio:9000",
        "MINIO_USER": "minioadmin",
        "MINIO_PASSWORD": "minio-secret",
        "MINIO_USE_SSL": "true",
    }
    code = (
        "from django.conf import settings as s; "
        "print(s.STORAGE_BACKEND, s.S3_ENDPOINT_URL, s.S3_ACCESS_KEY_ID, "
        "s.STORAGES['models']['OPTIONS']['bucket_name'])"
    )
    result = _settings_in_subprocess(env, code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["s3", "https://minio:9000", "minioadmin", "models"]


def test_standalone_defaults_generate_and_keep_a_secret_key(tmp_path):
    code = "from django.conf import settings as s; print(s.SECRET_KEY, s.TASKS_IN_PROCESS, s.STORAGE_BACKEND)"
    first = _settings_in_subprocess({"VAR_DIR": str(tmp_path)}, code)
    second = _settings_in_subprocess({"VAR_DIR": str(tmp_path)}, code)
    assert first.returncode == 0, first.stderr
    key, in_process, backend = first.stdout.split()
    assert len(key) >= 50 and in_process == "True" and backend == "local"
    assert second.stdout.split()[0] == key
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_deploy_checks_pass_with_production_settings(tmp_path):
    env = {
        "VAR_DIR": str(tmp_path),
        "SECRET_KEY": "p" * 30 + "-production-secret-key-of-enough-entropy-9f8e7d6c",
        "DEPLOY_HTTPS": "true",
        "ALLOWED_HOSTS": "studio.example.com",
    }
    clean = _environment_without_configuration()
    clean.update({"DJANGO_SETTINGS_MODULE": "finetune_studio.settings", **env})
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_production_redis_settings_isolate_events_and_share_cache_connections(tmp_path):
    env = {"VAR_DIR": str(tmp_path), "REDIS_URL": "redis://127.0.0.1:6379/4", "SECRET_KEY": "k" * 50}
    code = (
        "from django.conf import settings as s; "
        "print(s.EVENTS_REDIS_CHANNEL, s.CACHES['default']['OPTIONS']['pool_class'])"
    )
    result = _settings_in_subprocess(env, code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["finetune-studio:db4:events", "finetune_studio.cache.SharedConnectionPool"]
    named = _settings_in_subprocess(
        {**env, "EVENTS_REDIS_CHANNEL": "studio-b"},
        "from django.conf import settings as s; print(s.EVENTS_REDIS_CHANNEL)",
    )
    assert named.stdout.strip() == "studio-b"
