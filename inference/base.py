"""One interface for every inference backend: chat requests in, answers or typed errors out.

No Django and no torch here: the evaluation worker, ``scripts/`` and the benchmarks share it, and a page
request that lists endpoints must not pay for importing a deep-learning framework. Tool calls are the core's
``finetune_studio.records.ToolCall``, imported only where a call is made (importing the core package starts
Celery's app, which imports Django).

A backend is built for one endpoint (an operator's name and, for HTTP kinds, URL). Every error it raises
names that endpoint, and belongs to one of five kinds, so callers can decide without parsing messages:

- ``Unreachable``   the server could not be reached, or kept failing (5xx, 429, dropped connections) after
                    every retry; retry the whole piece of work later.
- ``ModelNotFound`` the endpoint does not serve that model; stop, the request is wrong.
- ``Refused``       any other refusal (bad request, API key refused, option not supported); stop.
- ``Timeout``       no answer within the endpoint's timeout, after every retry.
- ``BadAnswer``     an answer came but could not be read (malformed JSON, no content), after every retry.

Concurrency is bounded per backend: at most ``concurrency`` requests are in flight at once, whoever sends
them, and ``chat_many`` keeps exactly that many busy.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from finetune_studio.records import ToolCall

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
T = TypeVar("T")


# --- errors ----------------------------------------------------------------------------------------
class InferenceError(Exception):
    """Something an endpoint did (or did not do). ``str(error)`` is meant for users and names the endpoint."""

    kind = "error"

    def __init__(self, message: str, *, endpoint: str = "", attempts: int = 1):
        super().__init__(message)
        self.endpoint = endpoint
        self.attempts = attempts


class Unreachable(InferenceError):
    kind = "unreachable"


class ModelNotFound(InferenceError):
    kind = "model_not_found"


class Refused(InferenceError):
    kind = "refused"


class Timeout(InferenceError):
    kind = "timeout"


class BadAnswer(InferenceError):
    kind = "bad_answer"


class Transient(Exception):
    """Raised inside one attempt for a failure worth retrying; becomes ``final`` once retries run out."""

    def __init__(self, reason: str, *, final: type[InferenceError] = Unreachable, retry_after: float | None = None):
        super().__init__(reason)
        self.final = final
        self.retry_after = retry_after


# --- requests and answers --------------------------------------------------------------------------
@dataclass(frozen=True)
class ChatOptions:
    """Generation options every backend understands. ``max_tokens=None`` leaves the backend's default.

    ``temperature`` 0 is greedy (the evaluations' default); above 0 the backend samples, from the ``top_p``
    nucleus, reproducibly when a ``seed`` is given (exactly so on the local engine; as far as the server
    promises on the others).
    """

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChatRequest:
    """``messages`` are turns as OpenAI's chat API takes them (``finetune_studio.records.Message.openai_turn``):
    ``{"role", "content"}``, an assistant's ``tool_calls`` (arguments as JSON text) and ``tool`` turns with their
    ``tool_call_id`` and ``name``. ``tools`` are OpenAI function definitions. Each backend converts both to what
    its server speaks (``inference.tool_calls``).
    """

    model: str
    messages: tuple[dict, ...]
    options: ChatOptions = field(default_factory=ChatOptions)
    # A JSON schema the answer should follow; backends that can enforce it do (Ollama ``format``, OpenAI
    # ``response_format``), the others ignore it: callers always parse the answer as if it were free text.
    schema: dict | None = None
    tools: tuple[dict, ...] = ()

    @classmethod
    def from_prompt(
        cls,
        model: str,
        prompt: str,
        *,
        system: str = "",
        options: ChatOptions | None = None,
        schema: dict | None = None,
    ) -> ChatRequest:
        messages = ({"role": "system", "content": system},) if system else ()
        messages += ({"role": "user", "content": prompt},)
        return cls(model=model, messages=messages, options=options or ChatOptions(), schema=schema)


@dataclass(frozen=True)
class Answer:
    """``content`` may be empty when the model called tools (``tool_calls``: the calls as it wrote them)."""

    content: str
    latency_ms: float
    attempts: int = 1
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    # Nanoseconds the server says it spent generating, where it says (Ollama does).
    generation_ns: int | None = None
    finish_reason: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True)
class Delta:
    """A piece of an answer's text as it is generated (``Backend.chat_stream``)."""

    text: str


@dataclass(frozen=True)
class Outcome:
    """One result of ``chat_many``: ``index`` into the requests, then an answer or the error."""

    index: int
    answer: Answer | None = None
    error: InferenceError | None = None


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 3
    backoff: float = 0.5
    max_backoff: float = 10.0
    # A server's Retry-After is honoured up to this long; it knows its queue better than our backoff does.
    max_retry_after: float = 30.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(self.max_retry_after, max(0.0, retry_after))
        # Jitter spreads the retries of concurrent requests that failed together.
        return min(self.max_backoff, self.backoff * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)


# --- the interface ---------------------------------------------------------------------------------
class Backend:
    """A chat backend for one endpoint. Thread-safe; subclasses implement ``_chat_once`` (one attempt)."""

    kind = "abstract"
    # Whether ``ChatRequest.schema`` is enforced by the server (True) or ignored (False).
    supports_schema = False

    def __init__(
        self,
        *,
        endpoint: str,
        concurrency: int = 4,
        timeout: float = 120.0,
        retry: RetryPolicy | None = None,
    ):
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.endpoint = endpoint
        self.concurrency = concurrency
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._slots = threading.BoundedSemaphore(concurrency)
        self._stop = threading.Event()

    # What error messages call this endpoint; HTTP backends add their URL.
    @property
    def label(self) -> str:
        return f"endpoint '{self.endpoint}'"

    def list_models(self) -> list[str]:
        """Model names the endpoint serves; raises an InferenceError when it cannot say."""
        raise NotImplementedError

    def chat(self, request: ChatRequest) -> Answer:
        """One request, retried with backoff on transient failures; raises an InferenceError subclass."""

        def attempt() -> Answer:
            # A slot is held per attempt, not while backing off: a retrying request leaves room for others.
            with self._slots:
                return self._chat_once(request)

        answer, attempts, started = self._retrying(request.model, attempt)
        return replace(answer, latency_ms=(time.perf_counter() - started) * 1000, attempts=attempts)

    def _retrying(self, model: str, attempt: Callable[[], T]) -> tuple[T, int, float]:
        """``attempt()`` until it does not raise Transient, backing off between tries: (its result, the attempts,
        when the successful one started). Transient becomes its final error once retries run out."""
        number = 0
        while True:
            number += 1
            started = time.perf_counter()
            try:
                return attempt(), number, started
            except Transient as exc:
                if number > self.retry.max_retries or self._stop.is_set():
                    raise exc.final(
                        f"{self.label} kept failing for model '{model}' ({exc}; {number} attempts)",
                        endpoint=self.endpoint,
                        attempts=number,
                    ) from None
                if self._stop.wait(self.retry.delay(number, exc.retry_after)):
                    raise Unreachable(
                        f"stopped while retrying model '{model}' on {self.label} ({exc})",
                        endpoint=self.endpoint,
                        attempts=number,
                    ) from None
            except InferenceError as exc:
                exc.attempts = number
                raise

    def chat_stream(self, request: ChatRequest) -> Iterator[Delta | Answer]:
        """The answer as it is generated: its text in ``Delta`` pieces, then the whole ``Answer`` last.

        Errors are ``chat``'s, raised from the iteration. A backend that cannot stream (or a request with tools,
        whose calls are read from the whole answer) sends the whole text as one piece. Closing the iterator early
        stops the generation where the backend can.
        """
        answer = self.chat(request)
        if answer.content:
            yield Delta(answer.content)
        yield answer

    def chat_many(self, requests: Sequence[ChatRequest]) -> Iterator[Outcome]:
        """Every request, ``concurrency`` at a time; outcomes come as they complete (not in order).

        Closing the iterator early (``break``, an exception in the caller) stops submitting and aborts the
        backoff of requests still retrying. An error is an outcome, not an exception: the caller decides
        whether one ModelNotFound ends the whole run.
        """
        return _run_concurrently(self, requests)

    def _chat_once(self, request: ChatRequest) -> Answer:
        """One attempt: an Answer (latency is measured by ``chat``), Transient, or an InferenceError."""
        raise NotImplementedError

    def abort(self) -> None:
        """Pending retries give up at once (cancelled work, or another request failed for good).

        For good: an aborted backend retries nothing any more; a later run builds a new one.
        """
        self._stop.set()

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _run_concurrently(backend: Backend, requests: Sequence[ChatRequest]) -> Iterator[Outcome]:
    def ask(index: int) -> Outcome:
        try:
            return Outcome(index=index, answer=backend.chat(requests[index]))
        except InferenceError as exc:
            return Outcome(index=index, error=exc)

    pending: set[Future] = set()
    indexes: Iterator[int] = iter(range(len(requests)))
    executor = ThreadPoolExecutor(max_workers=backend.concurrency, thread_name_prefix=f"infer-{backend.endpoint}")
    finished = False
    try:
        # Submitting only as many as can run keeps a cancel (closing the iterator) from leaving a queue behind.
        for index in indexes:
            pending.add(executor.submit(ask, index))
            if len(pending) >= backend.concurrency:
                break
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
                next_index = next(indexes, None)
                if next_index is not None:
                    pending.add(executor.submit(ask, next_index))
        finished = True
    finally:
        if not finished:
            backend.abort()
            for future in pending:
                future.cancel()
        executor.shutdown(wait=True)


def first_line(text: str, limit: int = 300) -> str:
    text = (text or "").strip()
    return text.splitlines()[0][:limit] if text else ""
