"""The Ollama-speaking test server itself (other apps reuse it): its API and its faults."""

import hashlib
import json

import pytest
import requests

from tests.support.ollama_server import OllamaServer


@pytest.fixture
def server():
    with OllamaServer() as ollama:
        ollama.add_model("base", answer="neutral")
        yield ollama


def test_it_lists_shows_and_answers_like_ollama(server):
    tags = requests.get(f"{server.url}/api/tags", timeout=5).json()
    assert [m["name"] for m in tags["models"]] == ["base:latest"]
    show = requests.post(f"{server.url}/api/show", json={"model": "base"}, timeout=5).json()
    assert show["details"]["family"] == "llama"
    chat = requests.post(
        f"{server.url}/api/chat",
        json={"model": "base", "messages": [{"role": "user", "content": "hi"}], "stream": False},
        timeout=5,
    ).json()
    assert chat["message"]["content"] == "neutral" and chat["done"] and chat["eval_count"] == 1
    generate = requests.post(
        f"{server.url}/api/generate",
        json={"model": "base", "prompt": "hi", "stream": False, "format": "json"},
        timeout=5,
    ).json()
    assert json.loads(generate["response"]) == {"label": "neutral"}


def test_it_streams_ndjson_by_default(server):
    server.add_model("talker", answer="one two three")
    response = requests.post(f"{server.url}/api/generate", json={"model": "talker", "prompt": "x"}, timeout=5)
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert "".join(line["response"] for line in lines) == "one two three"
    assert lines[-1]["done"] is True and [line["done"] for line in lines[:-1]] == [False] * 3


def test_unknown_models_get_ollamas_404(server):
    response = requests.post(f"{server.url}/api/chat", json={"model": "x", "messages": []}, timeout=5)
    assert response.status_code == 404 and response.json() == {"error": "model 'x' not found"}


def test_blobs_are_checked_and_created_models_appear_in_tags(server):
    data = b"adapter weights"
    digest = hashlib.sha256(data).hexdigest()
    assert requests.head(f"{server.url}/api/blobs/sha256:{digest}", timeout=5).status_code == 404
    wrong = requests.post(f"{server.url}/api/blobs/sha256:{'0' * 64}", data=data, timeout=5)
    assert wrong.status_code == 400
    assert requests.post(f"{server.url}/api/blobs/sha256:{digest}", data=data, timeout=5).status_code == 201
    assert requests.head(f"{server.url}/api/blobs/sha256:{digest}", timeout=5).status_code == 200
    body = {"model": "tuned", "from": "base", "adapters": {"adapter.safetensors": f"sha256:{digest}"}, "stream": False}
    assert requests.post(f"{server.url}/api/create", json=body, timeout=5).json() == {"status": "success"}
    assert server.created == [body]
    names = [m["name"] for m in requests.get(f"{server.url}/api/tags", timeout=5).json()["models"]]
    assert "tuned:latest" in names


def test_faults_apply_the_given_number_of_times_then_stop(server):
    server.inject("status", status=503, times=2)
    statuses = [
        requests.post(f"{server.url}/api/chat", json={"model": "base", "stream": False}, timeout=5).status_code
        for _ in range(3)
    ]
    assert statuses == [503, 503, 200]
    server.inject("malformed", times=1)
    with pytest.raises(ValueError):
        requests.post(f"{server.url}/api/chat", json={"model": "base", "stream": False}, timeout=5).json()
    server.inject("drop", times=1)
    with pytest.raises(requests.ConnectionError):
        requests.post(f"{server.url}/api/chat", json={"model": "base", "stream": False}, timeout=5)
    server.inject("timeout", delay=1, times=1)
    with pytest.raises(requests.Timeout):
        requests.post(f"{server.url}/api/chat", json={"model": "base", "stream": False}, timeout=0.2)
    assert len(server.chat_requests(model="base")) == 6
