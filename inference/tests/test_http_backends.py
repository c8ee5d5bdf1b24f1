"""The Ollama and OpenAI-compatible backends, each against its real test server on loopback, with every fault.

The same specification runs for both kinds: what differs (paths, option names, error shapes) is the
backend's business, and callers see one taxonomy.
"""

import json
import socket
import threading
import time

import pytest

from inference.base import (
    BadAnswer,
    ChatOptions,
    ChatRequest,
    ModelNotFound,
    Refused,
    RetryPolicy,
    Timeout,
    Unreachable,
)
from inference.ollama_backend import OllamaBackend
from inference.openai import OpenAIBackend
from tests.support.ollama_server import OllamaServer, ToolCalls
from tests.support.openai_server import OpenAIServer

QUICK = RetryPolicy(max_retries=3, backoff=0.01, max_backoff=0.05)


class Harness:
    """One kind's test server and a backend pointed at it."""

    def __init__(self, kind: str):
        self.kind = kind
        self.server = (OllamaServer() if kind == "ollama" else OpenAIServer()).start()
        self.server.add_model("tuned", answer=lambda model, prompt: "positive" if "good" in prompt else "negative")

    def backend(self, **options):
        defaults = {"endpoint": "gpu-box", "url": self.server.url, "timeout": 5.0, "retry": QUICK}
        cls = OllamaBackend if self.kind == "ollama" else OpenAIBackend
        return cls(**{**defaults, **options})

    def chats(self):
        return self.server.chat_requests()

    def sent_options(self, request) -> dict:
        body = request.body
        if self.kind == "ollama":
            options = body["options"]
            return {
                "temperature": options.get("temperature"),
                "seed": options.get("seed"),
                "max_tokens": options.get("num_predict"),
                "stop": options.get("stop"),
            }
        return {key: body.get(key) for key in ("temperature", "seed", "max_tokens", "stop")}

    def sent_schema(self, request):
        if self.kind == "ollama":
            return request.body.get("format")
        return request.body["response_format"]["json_schema"]["schema"]


@pytest.fixture(params=["ollama", "openai"])
def harness(request):
    harness = Harness(request.param)
    yield harness
    harness.server.stop()


def ask(model="tuned", prompt="a good clause", **options):
    return ChatRequest.from_prompt(model, prompt, options=ChatOptions(**options))


def test_it_answers_a_chat_request_with_the_options_it_was_given(harness):
    with harness.backend() as backend:
        answer = backend.chat(ask(temperature=0.0, seed=7, max_tokens=12, stop=("\n\n",)))
    assert answer.content == "positive"
    assert answer.attempts == 1 and answer.latency_ms > 0
    assert answer.completion_tokens == 1
    (sent,) = harness.chats()
    assert harness.sent_options(sent) == {"temperature": 0.0, "seed": 7, "max_tokens": 12, "stop": ["\n\n"]}
    assert sent.body["messages"] == [{"role": "user", "content": "a good clause"}]


def test_it_sends_the_system_message_first(harness):
    with harness.backend() as backend:
        backend.chat(ChatRequest.from_prompt("tuned", "a good clause", system="You classify clauses."))
    assert [m["role"] for m in harness.chats()[0].body["messages"]] == ["system", "user"]


def test_it_asks_for_structured_output_with_the_schema(harness):
    schema = {"type": "object", "properties": {"label": {"enum": ["positive", "negative"]}}, "required": ["label"]}
    with harness.backend() as backend:
        assert backend.supports_schema
        answer = backend.chat(ChatRequest.from_prompt("tuned", "a bad clause", schema=schema))
    assert json.loads(answer.content) == {"label": "negative"}
    assert harness.sent_schema(harness.chats()[0]) == schema


WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}


def test_it_offers_the_tools_and_reads_the_calls_of_an_answer_with_no_text(harness):
    harness.server.add_model("caller", answer=ToolCalls((("get_weather", {"city": "Paris"}),)))
    with harness.backend() as backend:
        answer = backend.chat(
            ChatRequest(model="caller", messages=({"role": "user", "content": "Paris?"},), tools=(WEATHER,))
        )
    assert answer.content == ""
    assert [(call.name, call.arguments_object()) for call in answer.tool_calls] == [("get_weather", {"city": "Paris"})]
    assert harness.chats()[0].body["tools"] == [WEATHER]


def test_an_answer_in_text_has_no_calls_and_a_request_without_tools_offers_none(harness):
    with harness.backend() as backend:
        answer = backend.chat(ask())
    assert answer.content == "positive" and answer.tool_calls == ()
    assert "tools" not in harness.chats()[0].body


def test_a_call_that_names_no_function_is_a_bad_answer(harness):
    harness.server.add_model("confused", answer=ToolCalls((("", {"city": "Paris"}),)))
    with harness.backend() as backend, pytest.raises(BadAnswer, match="tool calls cannot be read"):
        backend.chat(ChatRequest(model="confused", messages=({"role": "user", "content": "Paris?"},), tools=(WEATHER,)))


def test_it_lists_the_models_the_endpoint_serves(harness):
    harness.server.add_model("base")
    expected = ["base:latest", "tuned:latest"] if harness.kind == "ollama" else ["base", "tuned"]
    with harness.backend() as backend:
        assert backend.list_models() == expected


def test_an_unknown_model_is_model_not_found_at_once_naming_the_endpoint(harness):
    with harness.backend() as backend, pytest.raises(ModelNotFound) as raised:
        backend.chat(ask(model="nope"))
    assert "model 'nope' not found on endpoint 'gpu-box'" in str(raised.value)
    assert harness.server.url in str(raised.value)
    assert raised.value.endpoint == "gpu-box"
    assert len(harness.chats()) == 1  # never retried


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
def test_it_retries_transient_http_errors_then_answers(harness, status):
    harness.server.inject("status", status=status, times=2)
    with harness.backend() as backend:
        answer = backend.chat(ask())
    assert answer.content == "positive" and answer.attempts == 3
    assert len(harness.chats()) == 3


def test_errors_that_persist_end_as_unreachable_with_the_reason_and_the_count(harness):
    harness.server.inject("status", status=503, message="queue full")
    with harness.backend() as backend, pytest.raises(Unreachable) as raised:
        backend.chat(ask())
    message = str(raised.value)
    assert "endpoint 'gpu-box'" in message and "kept failing for model 'tuned'" in message
    assert "HTTP 503: queue full" in message and "4 attempts" in message
    assert raised.value.attempts == 4 and len(harness.chats()) == 4


@pytest.mark.parametrize("status", [400, 422])
def test_a_refused_request_is_not_retried(harness, status):
    harness.server.inject("status", status=status, message="max_tokens is too large")
    with harness.backend() as backend, pytest.raises(Refused) as raised:
        backend.chat(ask())
    assert f"HTTP {status}: max_tokens is too large" in str(raised.value)
    assert "endpoint 'gpu-box'" in str(raised.value)
    assert len(harness.chats()) == 1


def test_dropped_connections_are_retried(harness):
    harness.server.inject("drop", times=2)
    with harness.backend() as backend:
        assert backend.chat(ask()).attempts == 3


def test_connections_dropped_every_time_end_as_unreachable(harness):
    harness.server.inject("drop")
    with harness.backend() as backend, pytest.raises(Unreachable, match="connection closed without an answer"):
        backend.chat(ask())


def test_malformed_answers_are_retried_then_bad_answer(harness):
    harness.server.inject("malformed", times=1)
    with harness.backend() as backend:
        assert backend.chat(ask()).attempts == 2
    harness.server.inject("malformed")
    with harness.backend() as backend, pytest.raises(BadAnswer, match="malformed JSON in the answer; 4 attempts"):
        backend.chat(ask())


def test_a_slow_answer_is_retried_then_timeout(harness):
    harness.server.inject("timeout", delay=1.0, times=1)
    with harness.backend(timeout=0.3) as backend:
        assert backend.chat(ask()).attempts == 2
    harness.server.inject("timeout", delay=1.0)
    backend = harness.backend(timeout=0.3, retry=RetryPolicy(max_retries=1, backoff=0.01))
    with backend, pytest.raises(Timeout, match=r"no answer within 0.3s; 2 attempts"):
        backend.chat(ask())


def test_a_server_that_is_not_listening_is_unreachable(harness):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with harness.backend(url=url, retry=RetryPolicy(max_retries=1, backoff=0.01)) as backend:
        with pytest.raises(Unreachable) as raised:
            backend.chat(ask())
        assert "connection refused" in str(raised.value) and url in str(raised.value)
        with pytest.raises(Unreachable, match=url):
            backend.list_models()


def test_chat_many_answers_every_request_within_its_concurrency(harness):
    harness.server.latency = 0.1
    requests = [ask(prompt=f"clause {i} is {'good' if i % 2 else 'bad'}") for i in range(12)]
    with harness.backend(concurrency=4) as backend:
        started = time.perf_counter()
        outcomes = list(backend.chat_many(requests))
        wall = time.perf_counter() - started
    assert sorted(outcome.index for outcome in outcomes) == list(range(12))
    assert all(o.answer.content == ("positive" if o.index % 2 else "negative") for o in outcomes)
    # 12 answers of 100 ms, 4 at a time: 3 rounds, never 12 in a row nor all at once.
    assert 0.3 <= wall < 0.9


def test_chat_many_reports_errors_as_outcomes(harness):
    requests = [ask(), ask(model="nope"), ask()]
    with harness.backend(concurrency=2) as backend:
        outcomes = sorted(backend.chat_many(requests), key=lambda o: o.index)
    assert [o.answer is not None for o in outcomes] == [True, False, True]
    assert isinstance(outcomes[1].error, ModelNotFound)


def test_abort_ends_the_backoff_of_a_retrying_request(harness):
    harness.server.inject("status", status=503)
    backend = harness.backend(retry=RetryPolicy(max_retries=50, backoff=5, max_backoff=5))
    threading.Timer(0.3, backend.abort).start()
    started = time.perf_counter()
    with pytest.raises(Unreachable):
        backend.chat(ask())
    assert time.perf_counter() - started < 3
    backend.close()


# --- OpenAI-specific: API keys, Retry-After, answers without choices, concurrency seen by the server -------------
@pytest.fixture
def openai_server():
    server = OpenAIServer(api_key="sk-secret-123").start()
    server.add_model("tuned", answer="positive")
    yield server
    server.stop()


def test_the_api_key_goes_in_the_authorization_header(openai_server):
    with OpenAIBackend(endpoint="vllm", url=openai_server.url + "/v1", api_key="sk-secret-123") as backend:
        assert backend.chat(ask()).content == "positive"
        assert backend.list_models() == ["tuned"]
    assert {r.headers.get("Authorization") for r in openai_server.requests} == {"Bearer sk-secret-123"}


def test_a_wrong_or_missing_api_key_is_refused_at_once_without_the_key_in_the_message(openai_server):
    for key in ("sk-wrong-456", None):
        backend = OpenAIBackend(endpoint="vllm", url=openai_server.url, api_key=key, retry=QUICK)
        with backend, pytest.raises(Refused) as raised:
            backend.chat(ask())
        assert "endpoint 'vllm'" in str(raised.value) and "refused the API key" in str(raised.value)
        assert "sk-" not in str(raised.value)
    assert len(openai_server.chat_requests()) == 2


def test_a_rate_limit_is_retried_after_the_delay_the_server_asks_for(openai_server):
    openai_server.inject("status", status=429, times=1, headers={"Retry-After": "0.4"})
    with OpenAIBackend(endpoint="vllm", url=openai_server.url, api_key="sk-secret-123", retry=QUICK) as backend:
        started = time.perf_counter()
        assert backend.chat(ask()).attempts == 2
    assert 0.4 <= time.perf_counter() - started < 2
    first, second = openai_server.chat_requests()
    assert second.at - first.at >= 0.4


def test_an_answer_without_choices_is_a_bad_answer(openai_server):
    openai_server.inject("empty")
    backend = OpenAIBackend(endpoint="vllm", url=openai_server.url, api_key="sk-secret-123", retry=QUICK)
    with backend, pytest.raises(BadAnswer, match="the answer has no choices"):
        backend.chat(ask())


def test_the_server_never_sees_more_requests_at_once_than_the_concurrency(openai_server):
    openai_server.latency = 0.05
    with OpenAIBackend(endpoint="vllm", url=openai_server.url, api_key="sk-secret-123", concurrency=3) as backend:
        # Two callers sharing one backend still share its bound.
        results = []
        threads = [threading.Thread(target=lambda: results.extend(backend.chat_many([ask()] * 9))) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(results) == 18 and all(o.answer for o in results)
    assert openai_server.max_in_flight == 3


def test_a_redirect_is_refused_not_followed(openai_server):
    openai_server.inject("redirect")
    backend = OpenAIBackend(endpoint="vllm", url=openai_server.url, api_key="sk-secret-123", retry=QUICK)
    with backend, pytest.raises(Refused, match="redirecting to http://elsewhere.example/v1/chat/completions"):
        backend.chat(ask())
    assert len(openai_server.chat_requests()) == 1


# --- streamed answers --------------------------------------------------------------------------------------


def test_a_streamed_answer_is_the_whole_answer_in_pieces(harness):
    harness.server.add_model("talker", answer="Refunds take five working days after we receive the item.")
    request = ask(model="talker", max_tokens=40)
    with harness.backend() as backend:
        whole = backend.chat(request)
        *pieces, answer = backend.chat_stream(request)

    assert "".join(piece.text for piece in pieces) == answer.content == whole.content
    assert answer.completion_tokens == whole.completion_tokens and answer.finish_reason == whole.finish_reason
    if harness.kind == "ollama":  # Ollama streams word by word; the OpenAI kind's backend sends the whole text
        assert len(pieces) == 10
        assert harness.chats()[-1].body["stream"] is True


def test_opening_a_stream_is_retried_as_a_chat_is_and_an_unknown_model_is_not(harness):
    harness.server.inject("status", status=503, times=2)
    with harness.backend() as backend:
        *pieces, answer = backend.chat_stream(ask())
        with pytest.raises(ModelNotFound, match="model 'nope' not found"):
            list(backend.chat_stream(ask(model="nope")))
    assert answer.content == "positive" and answer.attempts == 3
    assert len(harness.chats()) == 4


def test_a_stream_whose_server_breaks_off_is_an_error_not_an_answer(harness):
    harness.server.inject("malformed", times=5)
    with harness.backend() as backend, pytest.raises((BadAnswer, Unreachable)):
        list(backend.chat_stream(ask()))
