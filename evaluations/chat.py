"""Asking one model one conversation, on whatever serves it: the OpenAI-compatible chat completions
(``/openai/v1/chat/completions``) and the model page's chat.

Where a model is served, decided here once:

- a registry version deployed to Ollama: its live deployment (``ollama_name`` on the built-in ``ollama``
  endpoint), which carries the trained chat template and system prompt;
- otherwise its LoRA adapter on its base in the studio's local engine, when this process may load models
  (``LOCAL_INFERENCE_SERVES_CHAT``: on in a standalone studio, where the web process is the worker; off by
  default in production, where web processes load no models and serving is Ollama's);
- a base of the catalogue: the local engine, on the same condition;
- anything else: ChatUnavailable, saying what would serve it.

A model's folders never reach the caller: errors name the model, not where its files lie.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from django.conf import settings
from django.db import DatabaseError
from django.db.models import F
from django.utils import timezone

from finetune_studio.base_models import BaseModelRefused, base_model_resolve
from inference.base import Answer, ChatOptions, ChatRequest, Delta, InferenceError, RetryPolicy
from models_app.models import RegisteredModel

from .local_models import AdapterUnavailable, adapter_folder, has_adapter
from .models import ChatUsage

logger = logging.getLogger(__name__)

OLLAMA_ENDPOINT = "ollama"
LOCAL_ENDPOINT = "local"
# One retry: a person (or a script) is waiting for the answer, and a studio that keeps retrying looks hung.
CHAT_RETRY = RetryPolicy(max_retries=1, backoff=0.5)


class ChatUnavailable(Exception):
    """The model exists but nothing here can answer for it; the message says what would (deploy, a setting)."""


@dataclass(frozen=True)
class ChatTarget:
    """What answers for ``name``: an endpoint, the model's name there, and on the local engine what to load."""

    name: str  # as the caller named it: "support-bot:v1", "demo-base"
    endpoint: str
    served_as: str  # the model's name on the endpoint
    model: RegisteredModel | None = None  # the registry version, when it is one
    base: str = ""  # the local engine: the base's catalogue name
    base_folder: str = ""  # ...and its folder, resolved once with it
    system_prompt: str = ""  # the local engine: the system prompt the version was trained with

    @property
    def description(self) -> str:
        if self.endpoint == LOCAL_ENDPOINT:
            what = f"its adapter on {self.base}" if self.model is not None else self.base
            return f"the studio's local engine ({what})"
        return f"Ollama, deployed as {self.served_as}"


def _local_allowed() -> str | None:
    """Why the local engine may not answer chats in this process (None: it may)."""
    if not settings.LOCAL_INFERENCE_SERVES_CHAT:
        return "this studio's web processes do not load models (LOCAL_INFERENCE_SERVES_CHAT is off, as in production)"
    from inference.base import Refused
    from inference.selectors import endpoint_usable

    try:
        endpoint_usable(name=LOCAL_ENDPOINT)
    except Refused as exc:
        return str(exc)
    return None


def chat_target_for_model(*, model: RegisteredModel, name: str) -> ChatTarget:
    """Where the registry version ``model`` (called ``name`` by the caller) is answered; ChatUnavailable otherwise."""
    if model.ollama_name:
        return ChatTarget(name=name, endpoint=OLLAMA_ENDPOINT, served_as=model.ollama_name, model=model)
    deploy_hint = f"deploy it to Ollama (its page's Deploy, or POST /api/v1/models/{model.id}/deploy)"
    if not has_adapter(model):
        raise ChatUnavailable(f"{name} is not deployed and has no LoRA adapter in the registry: {deploy_hint}")
    refusal = _local_allowed()
    if refusal is not None:
        raise ChatUnavailable(f"{name} is not deployed, and {refusal}: {deploy_hint}")
    try:
        base = base_model_resolve(model.base_model, loadable=True)
    except BaseModelRefused as exc:
        raise ChatUnavailable(f"{name} is not deployed, and the local engine cannot load its base: {exc}") from None
    run = (model.training_metrics or {}).get("run")
    system_prompt = str(run.get("system_prompt") or "") if isinstance(run, dict) else ""
    return ChatTarget(
        name=name,
        endpoint=LOCAL_ENDPOINT,
        served_as=name,
        model=model,
        base=base.name,
        base_folder=str(base.path),
        system_prompt=system_prompt,
    )


def chat_target_for_base(*, base: str, name: str) -> ChatTarget:
    """Where the catalogue's base ``base`` (called ``name``) is answered: the local engine, when allowed here."""
    refusal = _local_allowed()
    if refusal is not None:
        raise ChatUnavailable(f"base models are answered by the local engine, and {refusal}")
    try:
        resolved = base_model_resolve(base, loadable=True)
    except BaseModelRefused as exc:
        raise ChatUnavailable(f"the local engine cannot load {exc}") from None
    return ChatTarget(
        name=name, endpoint=LOCAL_ENDPOINT, served_as=name, base=resolved.name, base_folder=str(resolved.path)
    )


def chat_answer(
    *,
    target: ChatTarget,
    messages: tuple[dict, ...],
    options: ChatOptions,
    tools: tuple[dict, ...] = (),
    schema: dict | None = None,
) -> Answer:
    """The model's answer to ``messages`` (OpenAI-shaped turns) on its target.

    Raises ChatUnavailable (the adapter cannot be read, or the endpoint cannot hold answers to ``schema``) or
    an ``inference.base.InferenceError`` (unreachable, timed out, refused, model not found, bad answer).
    """
    with _serving(target, messages, options, tools, schema) as (backend, request, folders):
        try:
            return backend.chat(request)
        except InferenceError as exc:
            raise _named(exc, folders) from None


def chat_stream(
    *,
    target: ChatTarget,
    messages: tuple[dict, ...],
    options: ChatOptions,
    tools: tuple[dict, ...] = (),
    schema: dict | None = None,
) -> Iterator[Delta | Answer]:
    """``chat_answer``'s answer as it is generated: text pieces (``Delta``), then the whole ``Answer``; the same
    errors, raised from the iteration (before the first piece when the model cannot be asked at all)."""
    with _serving(target, messages, options, tools, schema) as (backend, request, folders):
        try:
            yield from backend.chat_stream(request)
        except InferenceError as exc:
            raise _named(exc, folders) from None


@contextmanager
def _serving(target: ChatTarget, messages, options: ChatOptions, tools, schema):
    """(the backend, the request, the local engine's folders → their names) for one answer; the backend closed after."""
    from inference.local import LocalModelRef
    from inference.selectors import endpoint_usable, local_engine

    endpoint = endpoint_usable(name=target.endpoint)
    local = endpoint.kind == "local"
    if local and target.system_prompt and not any(turn.get("role") == "system" for turn in messages):
        # As it was trained: the run's system prompt went first in every record that brought none.
        messages = ({"role": "system", "content": target.system_prompt}, *messages)
    backend = endpoint.build_backend(local_engine=local_engine() if local else None, retry=CHAT_RETRY)
    if schema is not None and not backend.supports_schema:
        raise ChatUnavailable(
            f"{target.name} is answered by {target.description}, which cannot hold an answer to a JSON schema: "
            "deploy it to Ollama, or ask without response_format"
        )
    folders: dict[str, str] = {}
    with backend:
        if local:
            adapter = None
            if target.model is not None:
                try:
                    adapter = str(adapter_folder(target.model))
                except AdapterUnavailable as exc:
                    raise ChatUnavailable(f"{target.name}: {exc}") from None
                folders[adapter] = f"the adapter of {target.name}"
            folders[target.base_folder] = f"base model {target.base}"
            backend.register(target.served_as, LocalModelRef(base=target.base_folder, adapter=adapter))
        request = ChatRequest(
            model=target.served_as, messages=tuple(messages), options=options, schema=schema, tools=tools
        )
        yield backend, request, folders


def _named(exc: InferenceError, folders: dict[str, str]) -> InferenceError:
    """The error, its message naming the model where the local engine's named the folders it loaded."""
    message = str(exc)
    if not any(folder in message for folder in folders):
        return exc
    for folder in sorted(folders, key=len, reverse=True):
        message = message.replace(folder, folders[folder])
    return type(exc)(message, endpoint=exc.endpoint, attempts=exc.attempts)


# --- the model page's chat ------------------------------------------------------------------------------

# --- Usage ----------------------------------------------------------------------------------------


def chat_usage_record(*, user, target: ChatTarget, answer: Answer | None, source: str) -> None:
    """Count one request of ``user`` to ``target`` today (a failure when ``answer`` is None), with the tokens the
    serving engine counted. Never raises: a chat that was answered is not failed by its bookkeeping."""
    counts = {"requests": F("requests") + 1}
    if answer is None:
        counts["failures"] = F("failures") + 1
    else:
        counts["prompt_tokens"] = F("prompt_tokens") + (answer.prompt_tokens or 0)
        counts["completion_tokens"] = F("completion_tokens") + (answer.completion_tokens or 0)
    key = {"owner": user, "model_name": usage_name(target), "day": timezone.localdate(), "source": source}
    try:
        row, _ = ChatUsage.objects.get_or_create(**key, defaults={"model": target.model})
        ChatUsage.objects.filter(id=row.id).update(**counts)
    except DatabaseError:
        logger.warning("chat usage of %s not counted", key["model_name"], exc_info=True)


def usage_name(target: ChatTarget) -> str:
    """One name per model whatever asked it: a version as ``<registered name>:v<N>`` (``model-<id>`` without a
    name), a base by its catalogue name."""
    model = target.model
    if model is None:
        return target.base or target.name
    if model.registered_name_id and model.version:
        return f"{model.registered_name.name}:v{model.version}"
    return f"model-{model.id}"


MAX_PAGE_TURNS = 40  # a conversation kept in the page's form: past this, start again


@dataclass(frozen=True)
class ChatReply:
    """The conversation after one more exchange (``turns``: user and assistant texts), and the answer."""

    turns: list[dict]
    answer: Answer


def chat_page_turns(history: str) -> list[dict]:
    """The conversation so far, as the page's form carried it; ChatInvalid when it is not one."""
    if not history.strip():
        return []
    try:
        turns = json.loads(history)
    except ValueError:
        turns = None
    valid = isinstance(turns, list) and all(
        isinstance(turn, dict)
        and set(turn) == {"role", "content"}
        and turn["role"] in ("user", "assistant")
        and isinstance(turn["content"], str)
        for turn in turns
    )
    if not valid:
        raise ChatInvalid({"history": "the conversation could not be read back: start a new one"})
    return turns


class ChatInvalid(Exception):
    """What the page's form holds that cannot be asked: ``errors`` maps each field to its reason."""

    def __init__(self, errors: dict[str, str]):
        super().__init__(next(iter(errors.values())))
        self.errors = errors


def chat_page_reply(
    *, user, target: ChatTarget, turns: list[dict], system: str, message: str, temperature: float, max_tokens: int
) -> ChatReply:
    """The model's answer to ``message`` after ``turns`` (with ``system`` first when given), counted in ``user``'s
    chat usage.

    ChatInvalid for a conversation that cannot be asked; ChatUnavailable or an InferenceError from the model.
    """
    asked = _page_asked(turns, system=system, message=message)
    options = ChatOptions(temperature=temperature, max_tokens=max_tokens)
    try:
        answer = chat_answer(target=target, messages=asked, options=options)
    except (ChatUnavailable, InferenceError):
        chat_usage_record(user=user, target=target, answer=None, source=ChatUsage.Source.PAGE)
        raise
    chat_usage_record(user=user, target=target, answer=answer, source=ChatUsage.Source.PAGE)
    return _page_reply(turns, message, answer)


def chat_page_stream(
    *, user, target: ChatTarget, turns: list[dict], system: str, message: str, temperature: float, max_tokens: int
) -> Iterator[Delta | ChatReply]:
    """``chat_page_reply`` as the answer is generated: its text pieces (``Delta``), then the ChatReply.

    ChatInvalid is raised here, before anything is asked; ChatUnavailable or an InferenceError from the iteration.
    A stream the page left early is not counted.
    """
    asked = _page_asked(turns, system=system, message=message)
    options = ChatOptions(temperature=temperature, max_tokens=max_tokens)

    def pieces() -> Iterator[Delta | ChatReply]:
        try:
            for piece in chat_stream(target=target, messages=asked, options=options):
                if isinstance(piece, Answer):
                    chat_usage_record(user=user, target=target, answer=piece, source=ChatUsage.Source.PAGE)
                    piece = _page_reply(turns, message, piece)
                yield piece
        except (ChatUnavailable, InferenceError):
            chat_usage_record(user=user, target=target, answer=None, source=ChatUsage.Source.PAGE)
            raise

    return pieces()


def _page_asked(turns: list[dict], *, system: str, message: str) -> tuple[dict, ...]:
    """The messages that ask ``message`` after ``turns``; ChatInvalid naming the field when they cannot be asked."""
    from finetune_studio.records import RecordError, chat_prompt_from_openai

    if len(turns) >= MAX_PAGE_TURNS:
        raise ChatInvalid(
            {"message": f"this conversation has {len(turns)} turns, the most the page keeps: start a new one"}
        )
    # An empty answer is shown, but not asked back: a chat turn must say something.
    asked = [*(turn for turn in turns if turn["content"].strip()), {"role": "user", "content": message}]
    if system.strip():
        asked.insert(0, {"role": "system", "content": system})
    try:
        chat_prompt_from_openai({"messages": asked}, location="conversation")
    except RecordError as exc:
        field = "message" if exc.location.startswith(f"conversation: message {len(asked)} ") else "history"
        raise ChatInvalid({field: f"{exc.location}: {exc.reason}"}) from None
    return tuple(asked)


def _page_reply(turns: list[dict], message: str, answer: Answer) -> ChatReply:
    """The conversation with ``message`` and ``answer`` added (a tool call shown as its text)."""
    shown = answer.content
    if answer.tool_calls:
        from finetune_studio.records import tool_calls_text

        shown = (shown + "\n" if shown else "") + tool_calls_text(answer.tool_calls)
    return ChatReply(
        turns=[*turns, {"role": "user", "content": message}, {"role": "assistant", "content": shown}], answer=answer
    )
