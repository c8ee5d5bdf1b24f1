"""A real HTTP server on loopback that speaks the OpenAI chat-completions API, for tests and benchmarks.

The counterpart of ``ollama_server.py`` for vLLM, llama-server, SGLang, TGI, LM Studio and LiteLLM:
``POST /v1/chat/completions`` (non-streaming), ``GET /v1/models``, ``response_format`` with a JSON schema,
an optional API key (``Authorization: Bearer``, 401 otherwise), and errors in OpenAI's shape
``{"error": {"message", "type", "code"}}``. Answers are deterministic (a function ``(model, prompt) -> answer``
per model) and faults are injected on demand, as for the Ollama server: latency, HTTP errors (500, 503, 429
with ``Retry-After``, ...), timeouts, malformed JSON, answers without choices, dropped connections, redirects, and the
404 for an unknown model. Every request is recorded with its headers.

A model may answer with tool calls (``ToolCalls``), sent in OpenAI's shape (``message.tool_calls`` with
arguments as a JSON string, ``content`` null, ``finish_reason`` "tool_calls"); turns OpenAI would refuse (a
call's arguments given as an object, a tool result without ``tool_call_id``) get its 400.

    with OpenAIServer(api_key="sk-test") as server:
        server.add_model("tuned", answer=lambda model, prompt: "positive")
        server.inject("status", status=429, times=1, headers={"Retry-After": "0"})
        ...
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .loopback import Fault, FaultyLoopbackServer, RecordedRequest
from .ollama_server import AnswerFunction, RawAnswer, ToolCalls, constant_answer

FAULT_KINDS = ("status", "timeout", "malformed", "empty", "drop", "latency", "redirect")


class OpenAIServer(FaultyLoopbackServer):
    """An OpenAI-compatible API on 127.0.0.1 (a free port), served by threads."""

    _fault_kinds = FAULT_KINDS
    _fault_paths = ("/v1/chat/completions",)

    def __init__(self, *, latency: float = 0.0, api_key: str | None = None):
        self.latency = latency
        self.api_key = api_key
        self.requests: list[RecordedRequest] = []
        self._models: dict[str, AnswerFunction] = {}
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._in_flight = 0
        self.max_in_flight = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle (LoopbackServer) ------------------------------------------------------------
    _label = "OpenAI"
    _handler_attribute = "server_state"

    def _handler_class(self) -> type:
        return _Handler

    # --- configuration --------------------------------------------------------------------------
    def add_model(self, name: str, *, answer: AnswerFunction | str | ToolCalls = "") -> None:
        with self._lock:
            self._models[name] = answer if callable(answer) else constant_answer(answer)

    # --- assertions -----------------------------------------------------------------------------
    def chat_requests(self, *, model: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            recorded = list(self.requests)
        return [r for r in recorded if r.path == "/v1/chat/completions" and (model is None or r.model == model)]

    # --- used by the handler --------------------------------------------------------------------
    def _record(self, method: str, path: str, body: dict | None, headers) -> None:
        with self._lock:
            self.requests.append(
                RecordedRequest(method=method, path=path, body=body, at=time.monotonic(), headers=dict(headers.items()))
            )

    def _answer_function(self, name: str) -> AnswerFunction | None:
        with self._lock:
            return self._models.get(name)

    @contextlib.contextmanager
    def _counting(self):
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1


class _Handler(BaseHTTPRequestHandler):
    server_state: OpenAIServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without TCP_NODELAY, Nagle + delayed ACK add ~40 ms each.
    disable_nagle_algorithm = True
    server_version = "openai-test/0.1"

    def log_message(self, format, *args):  # quiet: the test output is for assertions
        pass

    # --- plumbing -------------------------------------------------------------------------------
    def _send_json(self, status: int, payload, *, raw: bytes | None = None, headers: dict | None = None) -> None:
        data = raw if raw is not None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, *, kind: str, code: str | None = None, headers=None) -> None:
        self._send_json(status, {"error": {"message": message, "type": kind, "code": code}}, headers=headers)

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _authorized(self) -> bool:
        key = self.server_state.api_key
        if key is None or self.headers.get("Authorization") == f"Bearer {key}":
            return True
        self._error(401, "Incorrect API key provided.", kind="invalid_request_error", code="invalid_api_key")
        return False

    # --- routes ---------------------------------------------------------------------------------
    def do_GET(self):
        state = self.server_state
        state._record("GET", self.path, None, self.headers)
        if self.path != "/v1/models":
            self._error(404, f"no route {self.path}", kind="not_found_error")
            return
        if not self._authorized():
            return
        fault = state._take_fault(self.path, None)
        if fault is not None and fault.kind == "status":
            self._error(fault.status, fault.message, kind="server_error", headers=fault.headers)
            return
        with state._lock:
            names = sorted(state._models)
        models = [{"id": name, "object": "model", "created": 0, "owned_by": "test"} for name in names]
        self._send_json(200, {"object": "list", "data": models})

    def do_POST(self):
        state = self.server_state
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            body = None
        state._record("POST", self.path, body if isinstance(body, dict) else None, self.headers)
        if self.path != "/v1/chat/completions":
            self._error(404, f"no route {self.path}", kind="not_found_error")
            return
        if not isinstance(body, dict):
            self._error(400, "the body is not a JSON object", kind="invalid_request_error")
            return
        if not self._authorized():
            return
        with state._counting():
            self._complete(body)

    def _send_tool_calls(self, name: str, prompt: str, answer: ToolCalls) -> None:
        calls = [
            {
                "id": f"call_{position}",
                "type": "function",
                "function": {
                    "name": function,
                    "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
                },
            }
            for position, (function, arguments) in enumerate(answer.calls)
        ]
        message = {"role": "assistant", "content": answer.content or None, "tool_calls": calls}
        self._send_completion(name, prompt, message, finish_reason="tool_calls", completion_tokens=1)

    def _send_completion(
        self, name: str, prompt: str, message: dict, *, finish_reason: str, completion_tokens: int
    ) -> None:
        """A chat completion as the API sends one: ``message`` the only choice, usage counted in words."""
        prompt_tokens = max(1, len(prompt.split()))
        self._send_json(
            200,
            {
                "id": f"chatcmpl-{len(self.server_state.requests)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": name,
                "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            },
        )

    def _complete(self, body: dict) -> None:
        state = self.server_state
        name = str(body.get("model") or "")
        fault = state._take_fault(self.path, name)
        state._sleep(state.latency)
        if fault is not None:
            if fault.kind == "latency":
                state._sleep(fault.delay)
            elif fault.kind == "status":
                state._sleep(fault.delay)
                kind = "rate_limit_error" if fault.status == 429 else "server_error"
                self._error(fault.status, fault.message, kind=kind, headers=fault.headers)
                return
            elif fault.kind == "timeout":
                state._sleep(fault.delay or 30)
                self._drop()
                return
            elif fault.kind == "drop":
                self._drop()
                return
            elif fault.kind == "malformed":
                self._send_json(200, None, raw=b'{"id": "chatcmpl-1", "choices": [{"message": {"content": "pos')
                return
            elif fault.kind == "redirect":
                self._send_json(307, {}, raw=b"", headers={"Location": "http://elsewhere.example/v1/chat/completions"})
                return
            elif fault.kind == "empty":
                self._send_json(200, {"id": "chatcmpl-1", "object": "chat.completion", "choices": []})
                return
        answer_function = state._answer_function(name)
        if answer_function is None:
            self._error(404, f"The model `{name}` does not exist.", kind="NotFoundError", code="model_not_found")
            return
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            self._error(400, "messages must be a non-empty list", kind="invalid_request_error")
            return
        refusal = _turns_refusal(body)
        if refusal:
            self._error(400, refusal, kind="invalid_request_error")
            return
        prompt = "\n".join(str(m.get("content") or "") for m in messages if isinstance(m, dict))
        answer = answer_function(name, prompt)
        if isinstance(answer, ToolCalls):
            self._send_tool_calls(name, prompt, answer)
            return
        response_format = body.get("response_format") or {}
        wants_json = isinstance(response_format, dict) and response_format.get("type") in ("json_schema", "json_object")
        if isinstance(answer, RawAnswer):
            content = answer.text
        elif wants_json and not _is_json(answer):
            content = json.dumps({"label": answer})
        else:
            content = answer
        finish_reason = "stop"
        max_tokens = body.get("max_tokens")
        words = content.split()
        if isinstance(max_tokens, int) and 0 < max_tokens < len(words):
            content, finish_reason = " ".join(words[:max_tokens]), "length"
        for stop in body.get("stop") or []:
            if isinstance(stop, str) and stop and stop in content:
                content = content[: content.index(stop)]
        self._send_completion(
            name,
            prompt,
            {"role": "assistant", "content": content},
            finish_reason=finish_reason,
            completion_tokens=max(1, len(content.split())),
        )


def _turns_refusal(body: dict) -> str | None:
    """Why OpenAI's API would refuse the request's tools or turns (its own wording), or None."""
    if "tools" in body and not isinstance(body["tools"], list):
        return "Invalid type for 'tools': expected an array."
    for number, message in enumerate(body.get("messages") or []):
        if not isinstance(message, dict):
            continue
        for position, call in enumerate(message.get("tool_calls") or []):
            arguments = (call.get("function") or {}).get("arguments") if isinstance(call, dict) else None
            if not isinstance(arguments, str):
                return (
                    f"Invalid type for 'messages[{number}].tool_calls[{position}].function.arguments': expected a "
                    f"string, but got {type(arguments).__name__} instead."
                )
        if message.get("role") == "tool" and not message.get("tool_call_id"):
            return f"Missing required parameter: 'messages[{number}].tool_call_id'."
    return None


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except (TypeError, ValueError):
        return False
    return True
