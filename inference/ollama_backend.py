"""Ollama behind the backend interface: ``POST /api/chat`` (non-streaming) and ``GET /api/tags``.

Structured output is Ollama's ``format`` (a JSON schema); options map to ``temperature``, ``top_p``, ``seed``,
``num_predict`` and ``stop``. Model management (blobs, create, show) stays in the deploy client.

Tool calling: ``tools`` are sent as given (Ollama takes OpenAI's function definitions); the turns are
converted to Ollama's shape (``tool_calls.ollama_turns``: arguments as objects, a tool result naming its
function as ``tool_name``); an answer's ``message.tool_calls`` (arguments as an object) become
``Answer.tool_calls``.
"""

from __future__ import annotations

from .base import RETRYABLE_STATUSES, Answer, BadAnswer, ChatRequest, ModelNotFound, Refused, Transient
from .http import HttpBackend, Response, int_or_none, json_body, retry_after_seconds
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
            "stream": False,
            "options": ollama_options,
        }
        if request.tools:
            payload["tools"] = list(request.tools)
        if request.schema is not None:
            payload["format"] = request.schema
        response = self._request("POST", "/api/chat", json_body=payload)
        status = response.status_code
        if status == 404:
            raise ModelNotFound(
                f"model '{request.model}' not found on {self.label} ({error_text(response)})", endpoint=self.endpoint
            )
        if status in RETRYABLE_STATUSES:
            raise Transient(f"HTTP {status}: {error_text(response)}", retry_after=retry_after_seconds(response))
        if status != 200:
            raise Refused(
                f"{self.label} refused the request for model '{request.model}' (HTTP {status}: {error_text(response)})",
                endpoint=self.endpoint,
            )
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


def error_text(response: Response) -> str:
    try:
        body = response.json()
        if isinstance(body, dict) and body.get("error"):
            return str(body["error"])[:300]
    except ValueError:
        pass
    return response.text[:300] or response.reason or "no body"
