"""Ollama behind the backend interface: ``POST /api/chat`` (whole answers, or streamed NDJSON lines for
``chat_stream``) and ``GET /api/tags``.

Structured output is Ollama's ``format`` (a JSON schema); options map to ``temperature``, ``top_p``, ``seed``,
``num_predict`` and ``stop``. Model management (blobs, create, show) stays in the deploy client.

Tool calling: ``tools`` are sent as given (Ollama takes OpenAI's function definitions); the turns are
converted to Ollama's shape (``tool_calls.ollama_turns``: arguments as objects, a tool result naming its
function as ``tool_name``); an answer's ``message.tool_calls`` (arguments as an object) become
``Answer.tool_calls``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

from urllib3.exceptions import HTTPError, TimeoutError

from .base import (
    RETRYABLE_STATUSES,
    Answer,
    BadAnswer,
    ChatRequest,
    Delta,
    ModelNotFound,
    Refused,
    Timeout,
    Transient,
    Unreachable,
)
from .http import HttpBackend, Response, describe, int_or_none, json_body, retry_after_seconds
from .tool_calls import answer_calls, ollama_turns


class OllamaBackend(HttpBackend):
    kind = "ollama"
    supports_schema = True

    def list_models(self) -> list[str]:
        response = self._single("GET", "/api/tags", timeout=min(self.timeout, 10))
        if response.status_code != 200:
            raise Refused(
                f"{self.label} answered HTTP {response.status_code} to /api/tags: {error_text(response)}",
                endpoint=self.endpoint,
            )
        try:
            models = response.json().get("models") or []
        except (ValueError, AttributeError):
            raise Refused(f"{self.label} sent an unreadable model list", endpoint=self.endpoint) from None
        return sorted(str(model["name"]) for model in models if isinstance(model, dict) and model.get("name"))

    def _chat_once(self, request: ChatRequest) -> Answer:
        response = self._request("POST", "/api/chat", json_body=self._payload(request, stream=False))
        if response.status_code != 200:
            raise self._refusal(request, response)
        body = json_body(response)
        if body.get("error"):
            raise Transient(f"error in the answer: {body['error']}")
        message = body.get("message")
        content = message.get("content") if isinstance(message, dict) else body.get("response")
        content, calls = answer_calls(message, content)
        if not isinstance(content, str):
            raise Transient("the answer has no message content", final=BadAnswer)
        return Answer(
            content=content,
            latency_ms=0.0,
            prompt_tokens=int_or_none(body.get("prompt_eval_count")),
            completion_tokens=int_or_none(body.get("eval_count")),
            generation_ns=int_or_none(body.get("eval_duration")),
            finish_reason=body.get("done_reason"),
            tool_calls=calls,
        )

    def chat_stream(self, request: ChatRequest) -> Iterator[Delta | Answer]:
        """Ollama's streamed ``/api/chat`` (NDJSON lines) as pieces; opening it is retried as ``chat`` is, a stream
        cut after its first piece is not (the caller has shown it). With tools, the whole answer (its calls)."""
        if request.tools:
            yield from super().chat_stream(request)
            return
        started = time.perf_counter()
        with self._slots:
            raw, attempts = self._open_chat_stream(request)
            pieces: list[str] = []
            done = False
            try:
                for line in raw:
                    if not line.strip():
                        continue
                    try:
                        body = json.loads(line)
                    except ValueError:
                        raise BadAnswer(f"{self.label} sent a malformed line while answering", endpoint=self.endpoint)
                    if not isinstance(body, dict) or body.get("error"):
                        reason = body.get("error") if isinstance(body, dict) else "not a JSON object"
                        raise Refused(
                            f"{self.label} failed while answering model '{request.model}': {reason}",
                            endpoint=self.endpoint,
                        )
                    message = body.get("message")
                    text = message.get("content") if isinstance(message, dict) else None
                    if isinstance(text, str) and text:
                        pieces.append(text)
                        yield Delta(text)
                    if body.get("done"):
                        yield Answer(
                            content="".join(pieces),
                            latency_ms=(time.perf_counter() - started) * 1000,
                            attempts=attempts,
                            prompt_tokens=int_or_none(body.get("prompt_eval_count")),
                            completion_tokens=int_or_none(body.get("eval_count")),
                            generation_ns=int_or_none(body.get("eval_duration")),
                            finish_reason=body.get("done_reason"),
                        )
                        done = True
                        return
            except TimeoutError:
                raise Timeout(
                    f"{self.label} stopped answering for {self.timeout:g}s mid-answer", endpoint=self.endpoint
                )
            except HTTPError as exc:
                raise Unreachable(f"{self.label} broke off its answer: {describe(exc)}", endpoint=self.endpoint)
            finally:
                if not done:
                    raw.close()  # left mid-answer (or the caller stopped reading): the connection is not reused
                raw.release_conn()
        raise Unreachable(f"{self.label} ended its answer before it was done", endpoint=self.endpoint)

    def _open_chat_stream(self, request: ChatRequest):
        """The open streamed answer and the attempts it took; transient failures retried as ``chat``'s are."""
        payload = self._payload(request, stream=True)

        def attempt():
            raw, refused = self._open_stream("/api/chat", json_body=payload)
            if raw is None:
                raise self._refusal(request, refused)
            return raw

        raw, attempts, _started = self._retrying(request.model, attempt)
        return raw, attempts

    def _refusal(self, request: ChatRequest, response: Response) -> Exception:
        """What a status other than 200 means: ModelNotFound, Transient (worth retrying) or Refused."""
        status = response.status_code
        if status == 404:
            return ModelNotFound(
                f"model '{request.model}' not found on {self.label} ({error_text(response)})", endpoint=self.endpoint
            )
        if status in RETRYABLE_STATUSES:
            return Transient(f"HTTP {status}: {error_text(response)}", retry_after=retry_after_seconds(response))
        return Refused(
            f"{self.label} refused the request for model '{request.model}' (HTTP {status}: {error_text(response)})",
            endpoint=self.endpoint,
        )

    def _payload(self, request: ChatRequest, *, stream: bool) -> dict:
        options = request.options
        ollama_options: dict = {"temperature": options.temperature}
        if options.top_p != 1.0:
            ollama_options["top_p"] = options.top_p
        if options.seed is not None:
            ollama_options["seed"] = options.seed
        if options.max_tokens is not None:
            ollama_options["num_predict"] = options.max_tokens
        if options.stop:
            ollama_options["stop"] = list(options.stop)
        payload: dict = {
            "model": request.model,
            "messages": ollama_turns(request.messages),
            "stream": stream,
            "options": ollama_options,
        }
        if request.tools:
            payload["tools"] = list(request.tools)
        if request.schema is not None:
            payload["format"] = request.schema
        return payload


def error_text(response: Response) -> str:
    try:
        body = response.json()
        if isinstance(body, dict) and body.get("error"):
            return str(body["error"])[:300]
    except ValueError:
        pass
    return response.text[:300] or response.reason or "no body"
