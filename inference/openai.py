"""Any OpenAI-compatible server: ``POST /v1/chat/completions`` and ``GET /v1/models``.

vLLM, llama.cpp's ``llama-server``, SGLang, TGI, LM Studio and LiteLLM all speak this. ``url`` is the server's
root (``http://host:8000``) or its ``/v1`` base; the API key, when there is one, goes in
``Authorization: Bearer``. ``response_format`` carries the JSON schema: vLLM and llama-server enforce it,
others ignore it, and callers parse the answer as free text either way.

Tool calling is the API's own: ``tools`` and the turns (an assistant's ``tool_calls``, ``tool`` results) are
sent as the request carries them; an answer's ``choices[0].message.tool_calls`` become ``Answer.tool_calls``
(its ``content`` is then often null, which is no fault). Arguments are kept as the server wrote them.
"""

from __future__ import annotations

from .base import RETRYABLE_STATUSES, Answer, BadAnswer, ChatRequest, ModelNotFound, Refused, RetryPolicy, Transient
from .http import HttpBackend, Response, int_or_none, json_body, retry_after_seconds
from .tool_calls import answer_calls


class OpenAIBackend(HttpBackend):
    kind = "openai"
    supports_schema = True

    def __init__(
        self,
        *,
        endpoint: str,
        url: str,
        api_key: str | None = None,
        concurrency: int = 4,
        timeout: float = 120.0,
        retry: RetryPolicy | None = None,
    ):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        root = url.rstrip("/")
        super().__init__(
            endpoint=endpoint,
            url=root.removesuffix("/v1"),
            concurrency=concurrency,
            timeout=timeout,
            retry=retry,
            headers=headers,
        )

    def list_models(self) -> list[str]:
        response = self._single("GET", "/v1/models", timeout=min(self.timeout, 10))
        if response.status_code != 200:
            raise self._refusal(response, "the model list")
        try:
            data = response.json().get("data") or []
        except (ValueError, AttributeError):
            raise Refused(f"{self.label} sent an unreadable model list", endpoint=self.endpoint) from None
        return sorted(str(item["id"]) for item in data if isinstance(item, dict) and item.get("id"))

    def _chat_once(self, request: ChatRequest) -> Answer:
        options = request.options
        payload: dict = {
            "model": request.model,
            "messages": list(request.messages),
            "temperature": options.temperature,
            "stream": False,
        }
        if options.top_p != 1.0:
            payload["top_p"] = options.top_p
        if options.seed is not None:
            payload["seed"] = options.seed
        if options.max_tokens is not None:
            payload["max_tokens"] = options.max_tokens
        if options.stop:
            payload["stop"] = list(options.stop)
        if request.tools:
            payload["tools"] = list(request.tools)
        if request.schema is not None:
            payload["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": request.schema, "strict": True},
            }
        response = self._request("POST", "/v1/chat/completions", json_body=payload)
        status = response.status_code
        if status in RETRYABLE_STATUSES:
            raise Transient(f"HTTP {status}: {error_text(response)}", retry_after=retry_after_seconds(response))
        if status != 200:
            raise self._refusal(response, f"the request for model '{request.model}'", model=request.model)
        body = json_body(response)
        if body.get("error"):
            raise Transient(f"error in the answer: {error_text(response)}")
        choices = body.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise Transient("the answer has no choices", final=BadAnswer)
        message = choices[0].get("message")
        content = message.get("content") if isinstance(message, dict) else None
        content, calls = answer_calls(message, content)
        if content is None:
            content = choices[0].get("text")  # completions-style servers
        if not isinstance(content, str):
            raise Transient("the answer has no message content", final=BadAnswer)
        usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
        return Answer(
            content=content,
            latency_ms=0.0,
            prompt_tokens=int_or_none(usage.get("prompt_tokens")),
            completion_tokens=int_or_none(usage.get("completion_tokens")),
            finish_reason=choices[0].get("finish_reason"),
            tool_calls=calls,
        )

    def _refusal(self, response: Response, what: str, *, model: str | None = None):
        status = response.status_code
        detail = error_text(response)
        code = error_code(response)
        if status == 404 or code == "model_not_found":
            name = f"model '{model}'" if model else "the resource"
            return ModelNotFound(f"{name} not found on {self.label} (HTTP {status}: {detail})", endpoint=self.endpoint)
        if status in (401, 403):
            return Refused(
                f"{self.label} refused the API key for {what} (HTTP {status}: {detail}); check the endpoint's key",
                endpoint=self.endpoint,
            )
        return Refused(f"{self.label} refused {what} (HTTP {status}: {detail})", endpoint=self.endpoint)


def _error_object(response: Response) -> dict | None:
    try:
        body = response.json()
    except ValueError:
        return None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            return error
        if isinstance(error, str):  # some servers (and Ollama's own compatibility layer) send a plain string
            return {"message": error}
    return None


def error_text(response: Response) -> str:
    error = _error_object(response)
    if error and error.get("message"):
        return str(error["message"])[:300]
    return response.text[:300] or response.reason or "no body"


def error_code(response: Response) -> str | None:
    error = _error_object(response)
    code = error.get("code") if error else None
    return str(code) if code is not None else None
