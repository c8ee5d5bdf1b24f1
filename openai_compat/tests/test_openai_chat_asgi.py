"""Under a real ASGI server (uvicorn), a streamed chat completion reaches the client piece by piece as the model
writes it, not collected first: Django's ASGI handler would gather a plain iterator whole before the first byte."""

import json
import time

import requests

from tests.support.ollama_server import OllamaServer
from tests.support.processes import asgi_server, service_env

from .test_openai_chat import registered_version

WORDS = "Refunds take five working days after we receive the item."
DELAY = 0.25  # seconds between the pieces Ollama streams


def test_the_pieces_of_a_streamed_answer_arrive_as_ollama_writes_them(transactional_db, local_storage, alice, tmp_path):
    from rest_framework.authtoken.models import Token

    token = Token.objects.create(user=alice)
    with OllamaServer(line_delay=DELAY) as ollama:
        ollama.add_model("support-bot-v1", answer=WORDS)
        registered_version(alice, ollama_name="support-bot-v1")
        env = service_env(VAR_DIR=str(tmp_path / "var"), OLLAMA_URL=ollama.url)
        with asgi_server(env=env, log_path=tmp_path / "server.log") as base_url:
            started = time.monotonic()
            response = requests.post(
                f"{base_url}/openai/v1/chat/completions",
                headers={"Authorization": f"Bearer {token.key}"},
                json={"model": "support-bot:v1", "messages": [{"role": "user", "content": "Refunds?"}], "stream": True},
                stream=True,
                timeout=30,
            )
            arrivals = []
            for line in response.iter_lines():
                if line.startswith(b"data: {"):
                    chunk = json.loads(line[len(b"data: ") :])
                    if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                        arrivals.append((time.monotonic() - started, chunk["choices"][0]["delta"]["content"]))

    assert response.status_code == 200, response.text
    assert "".join(text for _, text in arrivals) == WORDS
    pieces = len(WORDS.split())
    # Ollama takes (pieces) × DELAY to write the answer: the first piece came long before the last.
    assert len(arrivals) == pieces
    assert arrivals[-1][0] - arrivals[0][0] >= (pieces - 2) * DELAY
