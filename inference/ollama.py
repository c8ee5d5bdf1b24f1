"""A small Ollama HTTP client: chat with retries, the model list, and the calls a deploy makes.

No Django here: the Celery tasks and ``scripts/evaluate_model.py`` share it (``inference.clients``
builds it from the settings). Errors are
typed so callers can tell "retry later" (timeouts, dropped connections, 5xx, 429,
malformed answers) from "stop now" (unknown model, refused request, unreachable server).
"""

from __future__ import annotations

import random
import re
import threading
import time
from dataclasses import dataclass

import requests
from requests.adapters import HTTPAdapter

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})

# The one rule for Ollama model names, wherever a name comes in (a deploy's target and base, an
# evaluation's candidates): [host/][namespace/]name[:tag] of letters, digits, '.', '_' and '-'.
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*){0,2}(:[A-Za-z0-9][A-Za-z0-9._-]*)?$")
MODEL_NAME_MAX = 150


def model_name_problem(name: str) -> str | None:
    """Why ``name`` is not an Ollama model name, or None when it is one."""
    if not name:
        return "is empty"
    if len(name) > MODEL_NAME_MAX:
        return f"is longer than {MODEL_NAME_MAX} characters"
    if not MODEL_NAME.match(name) or ".." in name:
        return f"{name[:60]!r} is not an Ollama model name ([namespace/]name[:tag]; letters, digits, '.', '_', '-')"
    return None


def normalize_model_name(name: str) -> str:
    """Ollama resolves ``name`` as ``name:latest``."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


class OllamaError(Exception):
    """Something Ollama did (or did not do); the message is meant for users."""


class OllamaUnavailable(OllamaError):
    """Ollama could not be reached, or kept failing after every retry."""


class OllamaModelNotFound(OllamaError):
    pass


class OllamaRequestRefused(OllamaError):
    """A 4xx other than 404 and 429: retrying the same request cannot help."""


class _Retryable(Exception):
    def __init__(self, reason: str, *, connection: bool = False):
        super().__init__(reason)
        self.connection = connection


@dataclass(frozen=True)
class ChatAnswer:
    content: str
    latency_ms: float
    eval_count: int | None
    eval_duration_ns: int | None
    attempts: int


class OllamaClient:
    """Thread-safe: one pooled HTTP session shared by the evaluation's worker threads."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 120.0,
        max_retries: int = 3,
        retry_backoff: float = 0.5,
        max_backoff: float = 10.0,
        pool_size: int = 16,
    ):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        self.max_backoff = max_backoff
        self._session = requests.Session()
        # Retries are ours (they must count and back off per request), so urllib3's stay off.
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=max(pool_size, 1), max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._stop = threading.Event()

    def close(self) -> None:
        self._session.close()

    def abort(self) -> None:
        """Stop backing off: pending retries give up at once (cancel, another request failed for good)."""
        self._stop.set()

    # --- API --------------------------------------------------------------------------------------
    def list_models(self) -> list[dict]:
        try:
            response = self._session.get(
                f"{self.base_url}/api/tags", timeout=min(self.timeout, 10), allow_redirects=False
            )
        except requests.RequestException as exc:
            raise OllamaUnavailable(f"Ollama is unreachable at {self.base_url}: {_describe(exc)}") from None
        _refuse_redirect(response, self.base_url)
        if response.status_code != 200:
            raise OllamaUnavailable(f"Ollama at {self.base_url} answered {response.status_code} to /api/tags")
        try:
            models = response.json().get("models") or []
        except ValueError:
            raise OllamaUnavailable(f"Ollama at {self.base_url} sent an unreadable model list") from None
        return [model for model in models if isinstance(model, dict) and model.get("name")]

    # --- model management (deploying adapters) ---------------------------------------------------
    # One attempt each, no retries: a deploy is started by a person, who is better served by a clear
    # error at once (and a Deploy button to press again) than by minutes of backing off.

    def blob_exists(self, digest: str) -> bool:
        """``HEAD /api/blobs/sha256:<hex>``: whether Ollama already holds the blob."""
        response = self._send("HEAD", f"/api/blobs/{digest}", timeout=min(self.timeout, 30))
        if response.status_code == 200:
            return True
        if response.status_code == 404:
            return False
        raise self._refused(response, f"HEAD /api/blobs/{digest}")

    def blob_upload(self, digest: str, body, *, size: int) -> None:
        """``POST /api/blobs/sha256:<hex>`` with ``body`` streamed (an iterable of bytes of ``size`` bytes).

        Ollama checks the digest of what it received: a mismatch is its 400, raised as OllamaRequestRefused.
        """
        data = _SizedBody(body, size)
        response = self._send("POST", f"/api/blobs/{digest}", data=data, timeout=self.timeout)
        if response.status_code not in (200, 201):
            raise self._refused(response, f"upload of blob {digest}")

    def create(self, payload: dict, *, timeout: float | None = None) -> dict:
        """``POST /api/create`` (non-streaming): converting an adapter can take minutes on a big base."""
        response = self._send("POST", "/api/create", json={**payload, "stream": False}, timeout=timeout or self.timeout)
        if response.status_code != 200:
            raise self._refused(response, f"create of model '{payload.get('model')}'")
        body = _json_object(response)
        if body.get("error"):
            raise OllamaRequestRefused(
                f"Ollama at {self.base_url} failed to create '{payload.get('model')}': {body['error']}"
            )
        return body

    def show(self, model: str) -> dict:
        """``POST /api/show``: the model's template, parameters and details; OllamaModelNotFound when unknown."""
        response = self._send("POST", "/api/show", json={"model": model}, timeout=min(self.timeout, 60))
        if response.status_code != 200:
            raise self._refused(response, f"show of model '{model}'")
        return _json_object(response)

    def _send(self, method: str, path: str, **kwargs) -> requests.Response:
        try:
            response = self._session.request(method, f"{self.base_url}{path}", allow_redirects=False, **kwargs)
        except requests.Timeout:
            raise OllamaUnavailable(
                f"Ollama at {self.base_url} did not answer {path} within {kwargs.get('timeout')}s"
            ) from None
        except requests.RequestException as exc:
            raise OllamaUnavailable(f"Ollama is unreachable at {self.base_url}: {_describe(exc)}") from None
        _refuse_redirect(response, self.base_url)
        return response

    def _refused(self, response: requests.Response, what: str) -> OllamaError:
        status = response.status_code
        text = f"Ollama at {self.base_url} refused the {what} (HTTP {status}: {_error_text(response)})"
        if status == 404:
            return OllamaModelNotFound(text)
        if status in RETRYABLE_STATUSES:
            return OllamaUnavailable(text)
        return OllamaRequestRefused(text)

    def chat(self, *, model: str, prompt: str, options: dict, format: dict | str | None = None) -> ChatAnswer:
        """One non-streaming chat request, retried with exponential backoff on transient failures."""
        payload = {
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "stream": False,
            "options": options,
        }
        if format is not None:
            payload["format"] = format
        attempt = 0
        while True:
            attempt += 1
            started = time.perf_counter()
            try:
                body = self._post_chat(model, payload)
            except _Retryable as exc:
                if attempt > self.max_retries or self._stop.is_set():
                    if exc.connection:
                        raise OllamaUnavailable(
                            f"Ollama is unreachable at {self.base_url} ({exc}; {attempt} attempts)"
                        ) from None
                    raise OllamaUnavailable(
                        f"Ollama at {self.base_url} kept failing for model '{model}' ({exc}; {attempt} attempts)"
                    ) from None
                delay = min(self.max_backoff, self.retry_backoff * 2 ** (attempt - 1))
                # Jitter spreads the retries of concurrent requests that failed together.
                if self._stop.wait(delay * random.uniform(0.5, 1.0)):
                    raise OllamaUnavailable(f"stopped while retrying model '{model}' ({exc})") from None
                continue
            latency_ms = (time.perf_counter() - started) * 1000
            message = body.get("message")
            content = message.get("content") if isinstance(message, dict) else body.get("response")
            return ChatAnswer(
                content=content if isinstance(content, str) else "",
                latency_ms=latency_ms,
                eval_count=_int_or_none(body.get("eval_count")),
                eval_duration_ns=_int_or_none(body.get("eval_duration")),
                attempts=attempt,
            )

    def _post_chat(self, model: str, payload: dict) -> dict:
        try:
            response = self._session.post(
                f"{self.base_url}/api/chat", json=payload, timeout=self.timeout, allow_redirects=False
            )
        except requests.Timeout:
            raise _Retryable(f"no answer within {self.timeout:g}s")
        except requests.ConnectionError as exc:
            raise _Retryable(_describe(exc), connection=True)
        except requests.RequestException as exc:
            raise _Retryable(_describe(exc))
        _refuse_redirect(response, self.base_url)
        status = response.status_code
        if status == 404:
            raise OllamaModelNotFound(f"model '{model}' not found in Ollama at {self.base_url}")
        if status in RETRYABLE_STATUSES:
            raise _Retryable(f"HTTP {status}: {_error_text(response)}")
        if status != 200:
            raise OllamaRequestRefused(
                f"Ollama at {self.base_url} refused the request for model '{model}' "
                f"(HTTP {status}: {_error_text(response)})"
            )
        try:
            body = response.json()
        except ValueError:
            raise _Retryable("malformed JSON in the answer")
        if not isinstance(body, dict):
            raise _Retryable("the answer is not a JSON object")
        if body.get("error"):
            raise _Retryable(f"error in the answer: {body['error']}")
        return body


class _SizedBody:
    """An iterable body with a length: requests then sends Content-Length and streams the chunks as they come."""

    def __init__(self, chunks, size: int):
        self._chunks = chunks
        self._size = size

    def __len__(self) -> int:
        return self._size

    def __iter__(self):
        return iter(self._chunks)


def _json_object(response: requests.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _refuse_redirect(response: requests.Response, base_url: str) -> None:
    """OLLAMA_URL is the operator's choice: a redirect elsewhere (a hijacked or moved host) is not followed."""
    if response.is_redirect or 300 <= response.status_code < 400:
        target = response.headers.get("Location", "")[:200] or "an unnamed location"
        raise OllamaRequestRefused(
            f"Ollama at {base_url} answered HTTP {response.status_code} redirecting to {target}; "
            "redirects are not followed: set OLLAMA_URL to Ollama's own address"
        )


def _error_text(response: requests.Response) -> str:
    try:
        body = response.json()
        if isinstance(body, dict) and body.get("error"):
            return str(body["error"])[:300]
    except ValueError:
        pass
    return response.text[:300] or response.reason or "no body"


def _describe(exc: Exception) -> str:
    text = str(exc)
    if "Connection refused" in text or "Errno 111" in text:
        return "connection refused"
    if "RemoteDisconnected" in text or "Connection aborted" in text:
        return "connection closed without an answer"
    return f"{exc.__class__.__name__}: {text[:200]}"


def _int_or_none(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None
