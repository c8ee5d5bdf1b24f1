"""Inference endpoints: the operator's names (built in, INFERENCE_ENDPOINTS, admin), their keys never shown,
and ``GET /api/v1/inference/endpoints`` saying what each can do right now."""

import json
import socket
import subprocess
import sys

import pytest
from django.core.exceptions import ValidationError

from inference.base import ChatRequest
from inference.endpoints import (
    EndpointConfig,
    EndpointConfigError,
    EndpointUnavailable,
    UnknownEndpoint,
    parse_endpoint_settings,
)
from inference.models import InferenceEndpoint
from inference.openai import OpenAIBackend
from inference.selectors import endpoint_backend
from tests.support.ollama_server import OllamaServer
from tests.support.openai_server import OpenAIServer

KEY = "sk-live-do-not-show-4242"
URL = "/api/v1/inference/endpoints"


@pytest.fixture
def ollama(settings):
    server = OllamaServer().start()
    server.add_model("llama3.2:3b")
    settings.OLLAMA_URL = server.url
    yield server
    server.stop()


@pytest.fixture
def vllm(settings, monkeypatch):
    """An OpenAI-compatible server that wants a key, declared in INFERENCE_ENDPOINTS with the key in a variable."""
    server = OpenAIServer(api_key=KEY).start()
    server.add_model("Qwen/Qwen2.5-7B-Instruct", answer="payment")
    monkeypatch.setenv("VLLM_API_KEY", KEY)
    settings.INFERENCE_ENDPOINTS = parse_endpoint_settings(
        json.dumps([{"name": "vllm", "kind": "openai", "url": server.url, "api_key_env": "VLLM_API_KEY"}])
    )
    yield server
    server.stop()


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def by_name(response) -> dict:
    return {endpoint["name"]: endpoint for endpoint in response.json()["results"]}


# --- INFERENCE_ENDPOINTS --------------------------------------------------------------------------------------
def test_settings_give_endpoints_as_a_json_list():
    (endpoint,) = parse_endpoint_settings(
        '[{"name": "vllm", "kind": "openai", "url": "http://vllm:8000", "api_key_file": "/run/secrets/k",'
        ' "concurrency": 32, "timeout": 30, "enabled": false}]'
    )
    assert endpoint == EndpointConfig(
        name="vllm",
        kind="openai",
        url="http://vllm:8000",
        api_key_file="/run/secrets/k",
        concurrency=32,
        timeout=30,
        enabled=False,
        source="settings",
    )
    assert parse_endpoint_settings(None) == [] and parse_endpoint_settings("  ") == []


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{", "INFERENCE_ENDPOINTS is not valid JSON"),
        ('{"name": "x"}', "must be a JSON list"),
        ('[{"name": "vllm", "kind": "openai"}]', "INFERENCE_ENDPOINTS[0].url: '' is not an http:// or https:// URL"),
        ('[{"name": "vllm", "kind": "openai", "url": "file:///etc/passwd"}]', "is not an http:// or https:// URL"),
        ('[{"name": "a", "kind": "triton", "url": "http://h"}]', "[0].kind: 'triton' is not a kind of endpoint"),
        ('[{"name": "Bad Name", "kind": "ollama", "url": "http://h"}]', "'Bad Name' is not a valid endpoint name"),
        ('[{"name": "ollama", "kind": "ollama", "url": "http://h"}]', "'ollama' is built in; choose another name"),
        (
            '[{"name": "a", "kind": "ollama", "url": "http://h"}, {"name": "a", "kind": "ollama", "url": "http://h"}]',
            "[1].name: 'a' is defined twice",
        ),
        ('[{"name": "a", "kind": "openai", "url": "http://h", "api_key": "sk-1"}]', "gives an API key in clear"),
        ('[{"name": "a", "kind": "openai", "url": "http://h", "concurrency": 0}]', "0 is not a concurrency"),
        ('[{"name": "a", "kind": "openai", "url": "http://h", "token": "x"}]', "has unknown keys: token"),
        ('[{"name": "a", "kind": "local", "url": "http://h"}]', "a local endpoint runs in the studio's own workers"),
    ],
)
def test_settings_refuse_a_bad_endpoint_naming_the_entry_and_the_field(raw, message):
    with pytest.raises(EndpointConfigError) as raised:
        parse_endpoint_settings(raw)
    assert message in str(raised.value)
    assert "sk-1" not in str(raised.value)


def test_the_studio_refuses_to_start_with_a_bad_inference_endpoints_variable(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "INFERENCE_ENDPOINTS": '[{"name": "x", "kind": "openai"}]', "HOME": str(tmp_path)}
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='finetune_studio.settings';"
            "from django.conf import settings; settings.INSTALLED_APPS",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode != 0
    assert "ImproperlyConfigured: INFERENCE_ENDPOINTS[0].url" in completed.stderr


# --- admin rows -------------------------------------------------------------------------------------------------
def test_an_admin_endpoint_is_validated_like_a_settings_one(db, vllm):
    row = InferenceEndpoint(name="vllm", kind="openai", url="ftp://x", api_key_env="A", api_key_file="/k")
    with pytest.raises(ValidationError) as raised:
        row.full_clean()
    errors = raised.value.message_dict
    assert "already defined (built in or in INFERENCE_ENDPOINTS)" in errors["name"][0]
    assert "is not an http:// or https:// URL" in errors["url"][0]
    assert "not both" in errors["api_key_env"][0]
    InferenceEndpoint(name="tgi", kind="openai", url="http://tgi:8080", api_key_env="TGI_KEY").full_clean()


def test_the_admin_pages_never_show_a_key(admin_client, vllm, monkeypatch):
    monkeypatch.setenv("TGI_KEY", KEY)
    row = InferenceEndpoint.objects.create(name="tgi", kind="openai", url="http://tgi:8080", api_key_env="TGI_KEY")
    listing = admin_client.get("/admin/inference/inferenceendpoint/")
    change = admin_client.get(f"/admin/inference/inferenceendpoint/{row.id}/change/")
    assert listing.status_code == 200 and change.status_code == 200
    assert b"environment variable TGI_KEY" in listing.content
    assert KEY.encode() not in listing.content + change.content


# --- building backends by name ----------------------------------------------------------------------------------
def test_a_backend_is_built_for_a_name_with_the_key_read_where_the_operator_said(vllm):
    backend = endpoint_backend(name="vllm")
    assert isinstance(backend, OpenAIBackend)
    assert backend.chat(ChatRequest.from_prompt("Qwen/Qwen2.5-7B-Instruct", "Pay within 30 days.")).content == "payment"
    assert vllm.chat_requests()[0].headers["Authorization"] == f"Bearer {KEY}"


def test_a_key_file_is_read_when_the_backend_is_built(db, tmp_path, settings):
    with OpenAIServer(api_key=KEY) as server:
        server.add_model("m", answer="ok")
        key_file = tmp_path / "key"
        key_file.write_text(KEY + "\n")
        settings.INFERENCE_ENDPOINTS = [
            EndpointConfig(name="filed", kind="openai", url=server.url, api_key_file=str(key_file))
        ]
        assert endpoint_backend(name="filed").chat(ChatRequest.from_prompt("m", "hi")).content == "ok"


def test_an_unknown_or_disabled_endpoint_is_refused_with_the_reason_before_any_request(db, vllm, settings):
    with pytest.raises(UnknownEndpoint, match=r"no inference endpoint named 'http://evil:80' \(known: local, ollama"):
        endpoint_backend(name="http://evil:80")
    InferenceEndpoint.objects.create(name="old-box", kind="ollama", url=vllm.url, enabled=False)
    with pytest.raises(EndpointUnavailable, match="endpoint 'old-box' is disabled by the operator"):
        endpoint_backend(name="old-box")
    settings.INFERENCE_ENDPOINTS = [EndpointConfig(name="vllm", kind="openai", url=vllm.url, api_key_env="NOT_SET_X")]
    with pytest.raises(EndpointUnavailable, match="its API key variable NOT_SET_X is not set"):
        endpoint_backend(name="vllm")
    assert vllm.requests == []


# --- the API ----------------------------------------------------------------------------------------------------
def test_the_list_gives_each_endpoints_kind_availability_and_models(alice_api, ollama, vllm, settings):
    settings.INFERENCE_DEFAULT_ENDPOINT = "vllm"
    response = alice_api.get(URL)
    assert response.status_code == 200
    body = response.json()
    assert body["default_endpoint"] == "vllm"
    endpoints = by_name(response)
    assert list(endpoints) == ["local", "ollama", "vllm"]
    assert endpoints["vllm"] == {
        "name": "vllm",
        "kind": "openai",
        "source": "settings",
        "enabled": True,
        "available": True,
        "reason": "",
        "models": ["Qwen/Qwen2.5-7B-Instruct"],
        "supports_schema": True,
        "concurrency": 4,
        "default": True,
    }
    assert endpoints["ollama"]["available"] and endpoints["ollama"]["models"] == ["llama3.2:3b"]
    assert endpoints["local"]["available"] and endpoints["local"]["models"] is None
    assert KEY not in response.content.decode()


def test_an_endpoint_that_cannot_answer_is_listed_unavailable_with_the_reason(alice_api, olivia_api, db, settings):
    url = closed_port_url()
    settings.OLLAMA_URL = url
    InferenceEndpoint.objects.create(name="spare", kind="openai", url="http://10.0.0.9:8000", enabled=False)
    settings.INFERENCE_ENDPOINTS = [EndpointConfig(name="keyless", kind="openai", url=url, api_key_env="NOPE_KEY")]
    endpoints = by_name(alice_api.get(URL))
    assert endpoints["ollama"]["available"] is False
    assert "connection refused" in endpoints["ollama"]["reason"] and url not in endpoints["ollama"]["reason"]
    assert endpoints["spare"] == {**endpoints["spare"], "available": False, "reason": "disabled by the operator"}
    assert endpoints["keyless"]["reason"] == "endpoint 'keyless': its API key variable NOPE_KEY is not set"
    # Operators see where the server is.
    assert url in by_name(olivia_api.get(URL))["ollama"]["reason"]


def test_the_list_is_only_for_signed_in_users(anon_api, db):
    assert anon_api.get(URL).status_code == 401


def test_listing_endpoints_imports_no_deep_learning_framework(tmp_path):
    code = (
        "import os, sys, django\n"
        "os.environ['DJANGO_SETTINGS_MODULE'] = 'finetune_studio.settings'\n"
        "django.setup()\n"
        "from inference.selectors import _status, builtin_endpoints\n"
        "local = _status(builtin_endpoints()[0])\n"
        "assert local.available, local\n"
        "heavy = sorted(name for name in ('torch', 'transformers', 'peft') if name in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "VAR_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
