"""A real HTTP server on loopback that speaks Ollama's API, for tests and benchmarks.

Production code talks HTTP to ``OLLAMA_URL`` and never knows it is under test. The
server answers deterministically (a function ``(model, prompt) -> answer`` per model)
and injects faults on demand: latency, HTTP errors (500, 503, 429, ...), timeouts
(sleeping past the client's timeout), malformed JSON, dropped connections, and the
404 Ollama gives for an unknown model. Every request is recorded for assertions.

    with OllamaServer() as ollama:
        ollama.add_model("base", answer=lambda model, prompt: "neutral")
        ollama.inject("status", status=503, times=2, model="base")   # two 503s, then answers
        ...
        assert len(ollama.chat_requests(model="base")) == 3
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .loopback import Fault, FaultyLoopbackServer, RecordedRequest

AnswerFunction = Callable[[str, str], "str | RawAnswer | ToolCalls"]
_BLOB_PATH = re.compile(r"^/api/blobs/sha256:([0-9a-f]{64})$")


@dataclass(frozen=True)
class RawAnswer:
    """Sent verbatim even when the request asked for a JSON ``format`` (a model ignoring it)."""

    text: str


@dataclass(frozen=True)
class ToolCalls:
    """An answer that calls tools: ``calls`` are (function name, arguments) pairs, in each server's own shape.

    Arguments given as a string are sent as that string (malformed ones too: a model that wrote broken JSON).
    """

    calls: tuple[tuple[str, dict | str], ...]
    content: str = ""


def tool_answer(answers: dict[str, str | ToolCalls], default: str | ToolCalls = "") -> AnswerFunction:
    """A model answering, for the longest key of ``answers`` found in its prompt, that key's answer."""
    items = sorted(answers.items(), key=lambda item: -len(item[0]))

    def answer(model: str, prompt: str):
        for text, given in items:
            if text in prompt:
                return given
        return default

    return answer


def normalize_model_name(name: str) -> str:
    """Ollama resolves ``llama3`` as ``llama3:latest``."""
    return name if ":" in name else f"{name}:latest"


def answer_from_mapping(mapping: dict[str, str], default: str = "") -> AnswerFunction:
    """A model that knows the expected label of every text it was shown (a perfect fine-tune)."""
    items = sorted(mapping.items(), key=lambda item: -len(item[0]))

    def answer(model: str, prompt: str) -> str:
        for text, label in items:
            if text in prompt:
                return label
        return default

    return answer


def constant_answer(label: str | ToolCalls) -> AnswerFunction:
    return lambda model, prompt: label


def position_a_judge(reason: str = "answer A is better") -> AnswerFunction:
    """A pairwise judge biased to position A whatever the answers: asked in both orders it decides nothing."""
    return lambda model, prompt: json.dumps({"winner": "A", "reason": reason})


def prose_judge(text: str = "Both answers have their merits; the second reads a little better.") -> AnswerFunction:
    """A pairwise judge that cannot follow the verdict format: it answers prose even when asked for JSON."""
    return lambda model, prompt: RawAnswer(text)


def reference_judge() -> AnswerFunction:
    """A pairwise judge that picks the answer equal to the reference (as our default judge prompt lays it out)."""

    def judge(model: str, prompt: str) -> str:
        def section(name: str, following: str) -> str:
            start = prompt.find(f"{name}:\n")
            if start < 0:
                return ""
            start += len(name) + 2
            end = prompt.find(following, start)
            return prompt[start:end].strip() if end >= 0 else prompt[start:].strip()

        reference = section("Reference answer", "\n\nAnswer A:")
        answer_a = section("Answer A", "\n\nAnswer B:")
        answer_b = section("Answer B", "\n\nReply with JSON")
        if answer_a == reference and answer_b != reference:
            return json.dumps({"winner": "A", "reason": "A matches the reference"})
        if answer_b == reference and answer_a != reference:
            return json.dumps({"winner": "B", "reason": "B matches the reference"})
        return json.dumps({"winner": "tie", "reason": "neither or both match"})

    return judge


@dataclass
class _Model:
    name: str
    answer: AnswerFunction
    size: int = 1_000_000
    family: str = "llama"
    parameter_size: str = "1B"
    extra: dict = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.name.encode()).hexdigest()


class OllamaServer(FaultyLoopbackServer):
    """Ollama's HTTP API on 127.0.0.1 (a free port), served by threads."""

    # "cut": a streamed answer's first line, then the connection dropped (a server that dies mid-answer).
    _fault_kinds = ("status", "timeout", "malformed", "drop", "latency", "cut")
    _fault_paths = ("/api/chat", "/api/generate")

    @staticmethod
    def _same_model(mine: str, theirs: str) -> bool:
        return normalize_model_name(mine) == normalize_model_name(theirs)

    def __init__(self, *, latency: float = 0.0, ns_per_token: int = 5_000_000, line_delay: float = 0.0):
        self.latency = latency
        # Seconds between the lines of a streamed answer, as a model generating them would take.
        self.line_delay = line_delay
        self.ns_per_token = ns_per_token
        self.requests: list[RecordedRequest] = []
        self.created: list[dict] = []
        self.blobs: dict[str, bytes] = {}
        self._models: dict[str, _Model] = {}
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle (LoopbackServer) ------------------------------------------------------------
    _label = "Ollama"
    _handler_attribute = "ollama"

    def _handler_class(self) -> type:
        return _Handler

    # --- configuration --------------------------------------------------------------------------
    def add_model(self, name: str, *, answer: AnswerFunction | str | ToolCalls = "", **details) -> None:
        function = answer if callable(answer) else constant_answer(answer)
        with self._lock:
            self._models[normalize_model_name(name)] = _Model(
                name=normalize_model_name(name), answer=function, **details
            )

    def remove_model(self, name: str) -> None:
        with self._lock:
            self._models.pop(normalize_model_name(name), None)

    # --- assertions -----------------------------------------------------------------------------
    def chat_requests(self, *, model: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            recorded = list(self.requests)
        return [
            request
            for request in recorded
            if request.path == "/api/chat"
            and (model is None or normalize_model_name(request.model or "") == normalize_model_name(model))
        ]

    # --- used by the handler --------------------------------------------------------------------
    def _record(self, method: str, path: str, body: dict | None) -> None:
        with self._lock:
            self.requests.append(RecordedRequest(method=method, path=path, body=body, at=time.monotonic()))

    def _model(self, name: str) -> _Model | None:
        with self._lock:
            return self._models.get(normalize_model_name(name))


class _Handler(BaseHTTPRequestHandler):
    ollama: OllamaServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without TCP_NODELAY, Nagle + delayed ACK add ~40 ms each.
    disable_nagle_algorithm = True
    server_version = "ollama-test/0.1"

    def log_message(self, format, *args):  # quiet: the test output is for assertions
        pass

    # --- plumbing -------------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send_json(self, status: int, payload, *, raw: bytes | None = None) -> None:
        data = raw if raw is not None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str) -> None:
        self._send_json(status, {"error": message})

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _json_body(self) -> dict | None:
        raw = self._read_body()
        if not raw:
            return {}
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            return None
        return body if isinstance(body, dict) else None

    # --- routes ---------------------------------------------------------------------------------
    def do_GET(self):
        self.ollama._record("GET", self.path, None)
        if self.path == "/api/tags":
            with self.ollama._lock:
                models = list(self.ollama._models.values())
            self._send_json(200, {"models": [_tag(model) for model in models]})
        elif self.path == "/api/version":
            self._send_json(200, {"version": "0.0.0-test"})
        elif self.path == "/":
            raw = b"Ollama is running"
            self.send_response(200)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)
        else:
            self._error(404, "not found")

    def do_HEAD(self):
        self.ollama._record("HEAD", self.path, None)
        match = _BLOB_PATH.match(self.path)
        status = 200 if match and match.group(1) in self.ollama.blobs else 404
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self):
        blob = _BLOB_PATH.match(self.path)
        if blob:
            data = self._read_body()
            self.ollama._record("POST", self.path, {"size": len(data)})
            if hashlib.sha256(data).hexdigest() != blob.group(1):
                self._error(400, "digest mismatch")
                return
            self.ollama.blobs[blob.group(1)] = data
            self._send_json(201, {}, raw=b"")
            return
        body = self._json_body()
        self.ollama._record("POST", self.path, body)
        if body is None:
            self._error(400, "invalid JSON body")
            return
        if self.path in ("/api/chat", "/api/generate"):
            self._generate(body, chat=self.path == "/api/chat")
        elif self.path == "/api/show":
            self._show(body)
        elif self.path == "/api/create":
            self._create(body)
        else:
            self._error(404, "not found")

    def _show(self, body: dict) -> None:
        name = body.get("model") or body.get("name") or ""
        model = self.ollama._model(name)
        if model is None:
            self._error(404, f"model '{name}' not found")
            return
        self._send_json(
            200,
            {
                "modelfile": f"FROM {model.name}\n",
                "parameters": "temperature 0",
                "template": "{{ .Prompt }}",
                "details": _details(model),
                "capabilities": ["completion"],
                **model.extra,
            },
        )

    def _create(self, body: dict) -> None:
        name = body.get("model") or ""
        if not name:
            self._error(400, "model name is required")
            return
        for digest in list((body.get("files") or {}).values()) + list((body.get("adapters") or {}).values()):
            if str(digest).removeprefix("sha256:") not in self.ollama.blobs:
                self._error(400, f"blob {digest} not found")
                return
        self.ollama.created.append(body)
        base = self.ollama._model(body["from"]) if body.get("from") else None
        self.ollama.add_model(name, answer=base.answer if base else "")
        if body.get("stream") is False:
            self._send_json(200, {"status": "success"})
        else:
            self._send_ndjson([{"status": "creating model"}, {"status": "success"}])

    def _generate(self, body: dict, *, chat: bool) -> None:
        ollama = self.ollama
        name = str(body.get("model") or "")
        fault = ollama._take_fault(self.path, name)
        ollama._sleep(ollama.latency)
        if fault is not None:
            if fault.kind == "latency":
                ollama._sleep(fault.delay)
            elif fault.kind == "status":
                ollama._sleep(fault.delay)
                self._error(fault.status, fault.message)
                return
            elif fault.kind == "timeout":
                ollama._sleep(fault.delay or 30)
                self._drop()
                return
            elif fault.kind == "drop":
                self._drop()
                return
            elif fault.kind == "malformed":
                self._send_json(200, None, raw=b'{"model": "' + name.encode() + b'", "message": {"content": "pos')
                return
        cut = fault is not None and fault.kind == "cut"
        model = ollama._model(name)
        if model is None:
            self._error(404, f"model '{name}' not found")
            return
        if chat and (refusal := _ollama_turns_refusal(body)):
            self._error(400, refusal)
            return
        prompt = RecordedRequest(method="POST", path=self.path, body=body, at=0).prompt
        answer = model.answer(name, prompt)
        calls = []
        if isinstance(answer, ToolCalls):
            calls = [{"function": {"name": call, "arguments": arguments}} for call, arguments in answer.calls]
            content = answer.content
        elif isinstance(answer, RawAnswer):
            content = answer.text
        elif body.get("format") and not _is_json(answer):
            content = json.dumps({"label": answer})
        else:
            content = answer
        # Words stand for tokens: an answer longer than options.num_predict is cut there, as Ollama cuts it.
        limit = (body.get("options") or {}).get("num_predict")
        words = re.findall(r"\S+\s*", content)
        cut_at_limit = isinstance(limit, int) and 0 < limit < len(words)
        if cut_at_limit:
            content = "".join(words[:limit])
        tokens = max(1, len(content.split()))
        stats = {
            "model": name,
            "created_at": datetime.now(UTC).isoformat(),
            "done": True,
            "done_reason": "length" if cut_at_limit else "stop",
            "total_duration": tokens * ollama.ns_per_token + 1_000_000,
            "load_duration": 1_000,
            "prompt_eval_count": max(1, len(prompt.split())),
            "prompt_eval_duration": 1_000_000,
            "eval_count": tokens,
            "eval_duration": tokens * ollama.ns_per_token,
        }
        if body.get("stream", True) is False:
            message = {"role": "assistant", "content": content, **({"tool_calls": calls} if calls else {})}
            payload = {**stats, **({"message": message} if chat else {})}
            if not chat:
                payload["response"] = content
            self._send_json(200, payload)
            return
        pieces = re.findall(r"\S+\s*", content) or [content]
        lines = []
        for piece in pieces:
            line = {"model": name, "created_at": stats["created_at"], "done": False}
            line.update({"message": {"role": "assistant", "content": piece}} if chat else {"response": piece})
            lines.append(line)
        final = {**stats, **({"message": {"role": "assistant", "content": ""}} if chat else {"response": ""})}
        self._send_ndjson([*lines, final], cut_after=1 if cut else None)

    def _send_ndjson(self, lines: list[dict], *, cut_after: int | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for number, line in enumerate(lines):
            if number == cut_after:
                self.wfile.flush()
                self._drop()
                return
            if number:
                self.wfile.flush()
                self.ollama._sleep(self.ollama.line_delay)
            data = json.dumps(line).encode() + b"\n"
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")


def _ollama_turns_refusal(body: dict) -> str | None:
    """Why Ollama would refuse the request's turns or tools (its Go types do not unmarshal them), or None."""
    if "tools" in body and not isinstance(body["tools"], list):
        return "json: cannot unmarshal tools: expected an array"
    for message in body.get("messages") or []:
        for call in (message.get("tool_calls") or []) if isinstance(message, dict) else []:
            arguments = (call.get("function") or {}).get("arguments") if isinstance(call, dict) else None
            if not isinstance(arguments, dict):
                return (
                    f"json: cannot unmarshal {type(arguments).__name__} into Go struct field "
                    "ToolCallFunction.messages.tool_calls.function.arguments of type api.ToolCallFunctionArguments"
                )
    return None


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except (TypeError, ValueError):
        return False
    return True


def _details(model: _Model) -> dict:
    return {
        "format": "gguf",
        "family": model.family,
        "families": [model.family],
        "parameter_size": model.parameter_size,
        "quantization_level": "Q4_0",
    }


def _tag(model: _Model) -> dict:
    return {
        "name": model.name,
        "model": model.name,
        "modified_at": "2026-01-01T00:00:00Z",
        "size": model.size,
        "digest": model.digest,
        "details": _details(model),
    }
