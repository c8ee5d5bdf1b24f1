"""Tool calls between the studio's OpenAI-shaped turns and what each backend speaks.

A ``ChatRequest`` carries its turns as OpenAI's chat API takes them (``Message.openai_turn``: a call's
``arguments`` is the JSON object's text, a ``tool`` turn names its call by ``tool_call_id``) and the
function definitions as OpenAI's ``tools``. Each backend converts: the OpenAI-compatible one sends them as
they are, Ollama's native API wants arguments as objects and a tool turn's function as ``tool_name``,
transformers' chat templates want arguments as objects (``Message.template_turn``).

Answers come back as ``ToolCall``s whose ``arguments`` is the text the model wrote: a malformed one is kept
as written, never repaired or dropped, so scoring counts it wrong instead of failing the run.

The built-in engine reads calls written in the Hermes convention (Qwen2.5's and NousResearch's chat
templates, and the demo base's)::

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

one block per call, as many blocks as calls, anywhere in the answer (``parse_tool_call_blocks``), and, when
there is none, a whole answer in one of the other conventions of open chat templates (``parse_tool_calls``,
which also checks that every function was offered):

- Llama 3.1's and 3.2's JSON: ``{"name": "get_weather", "parameters": {…}}``, several separated by ``;``;
- Mistral's: ``[TOOL_CALLS][{"name": "get_weather", "arguments": {…}}, …]`` (the marker is a special token a
  decoder usually drops, so the bare JSON array counts too), or ``[TOOL_CALLS]get_weather[ARGS]{…}`` per call;
- Llama 3.2's Python style: ``[get_weather(city="Paris"), get_time()]``, literal arguments only.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Collection, Iterable, Sequence
from typing import TYPE_CHECKING

from .base import BadAnswer, Transient

if TYPE_CHECKING:
    from finetune_studio.records import ToolCall

# A block's body never holds another opening tag: an unclosed block does not swallow the well-formed one after it.
TOOL_CALL_BLOCK = re.compile(r"<tool_call>\s*((?:(?!<tool_call>).)*?)\s*</tool_call>", re.DOTALL)


def arguments_text(arguments) -> str:
    """A call's arguments as text: a string as given (even when it is not valid JSON), anything else as JSON."""
    if isinstance(arguments, str):
        return arguments
    return json.dumps({} if arguments is None else arguments, ensure_ascii=False)


def arguments_value(arguments: str):
    """The arguments as an object for the APIs that want one; the text itself when it is not JSON.

    Our own turns come from records, whose arguments are checked JSON objects; anything else is sent as it
    is, so the server says what is wrong with it rather than this code guessing.
    """
    try:
        return json.loads(arguments)
    except (TypeError, ValueError):
        return arguments


def parse_tool_call_blocks(text: str) -> tuple[str, tuple[ToolCall, ...]]:
    """(the text without its call blocks, the calls) of an answer written in the Hermes convention.

    A block is ``<tool_call>`` + a JSON object ``{"name": …, "arguments": {…}}`` + ``</tool_call>``, with any
    whitespace around the object. A block whose body is not such an object (broken JSON, no name, an
    unclosed tag cut off by the token limit) is not a call: it stays in the text, where it is scored as the
    answer it is. Calls get the ids ``call_0``, ``call_1``… in the order written.
    """
    calls: list[ToolCall] = []
    kept: list[str] = []
    position = 0
    for match in TOOL_CALL_BLOCK.finditer(text):
        call = _block_call(match.group(1), len(calls))
        if call is None:
            continue
        kept.append(text[position : match.start()])
        position = match.end()
        calls.append(call)
    kept.append(text[position:])
    return ("".join(kept).strip() if calls else text), tuple(calls)


# Llama 3.1's and 3.2's chat templates write a call as the whole turn: {"name": …, "parameters": {…}}, after an
# optional <|python_tag|>; several calls are objects separated by ";".
PYTHON_TAG = "<|python_tag|>"


def parse_tool_calls(text: str, *, tool_names: Collection[str]) -> tuple[str, tuple[ToolCall, ...]]:
    """(the text left, the calls) of an answer to a request that offered the functions ``tool_names``.

    Hermes ``<tool_call>`` blocks first (``parse_tool_call_blocks``); else the Llama 3.1/3.2 JSON convention: the
    whole answer is one or more JSON objects ``{"name": …, "parameters": {…}}`` (``arguments`` is taken too),
    separated by ``;``, each naming an offered function. Anything else is text: an answer that only looks like
    JSON, or names a function that was not offered, is scored as the text it is.
    """
    content, calls = parse_tool_call_blocks(text)
    if calls:
        return content, calls
    offered = set(tool_names)
    for parse in (_json_calls, _mistral_calls, _python_calls):
        whole_answer_calls = parse(text, offered)
        if whole_answer_calls:
            return "", whole_answer_calls
    return text, ()


def _json_calls(text: str, tool_names: set[str]) -> tuple[ToolCall, ...]:
    body = text.strip().removeprefix(PYTHON_TAG).strip()
    decoder = json.JSONDecoder()
    calls: list[ToolCall] = []
    position = 0
    while position < len(body):
        try:
            value, position = decoder.raw_decode(body, position)
        except ValueError:
            return ()
        if not isinstance(value, dict) or value.get("name") not in tool_names or not set(value) <= _JSON_CALL_KEYS:
            return ()
        arguments = value.get("parameters", value.get("arguments", {}))
        calls.append(_tool_call(f"call_{len(calls)}", value["name"], arguments))
        rest = body[position:].lstrip()
        if rest.startswith(";"):
            rest = rest[1:].lstrip()
        position = len(body) - len(rest)
    return tuple(calls)


_JSON_CALL_KEYS = {"name", "parameters", "arguments"}
MISTRAL_TOOL_CALLS = "[TOOL_CALLS]"
_MISTRAL_ARGS_CALL = re.compile(r"\[TOOL_CALLS\]\s*([A-Za-z_][\w.-]*)\s*\[ARGS\]")


def _mistral_calls(text: str, tool_names: set[str]) -> tuple[ToolCall, ...]:
    """``[TOOL_CALLS]`` + a JSON array of ``{"name", "arguments"}`` (or that array alone), or
    ``[TOOL_CALLS]name[ARGS]{…}`` repeated: Mistral's templates, older and newer."""
    body = text.strip()
    if _MISTRAL_ARGS_CALL.match(body):
        return _mistral_args_calls(body, tool_names)
    body = body.removeprefix(MISTRAL_TOOL_CALLS).strip()
    if not body.startswith("["):
        return ()
    try:
        value = json.loads(body)
    except ValueError:
        return ()
    if not isinstance(value, list) or not value:
        return ()
    calls = []
    for index, item in enumerate(value):
        if not isinstance(item, dict) or item.get("name") not in tool_names or not set(item) <= _MISTRAL_CALL_KEYS:
            return ()
        calls.append(_tool_call(f"call_{index}", item["name"], item.get("arguments", item.get("parameters", {}))))
    return tuple(calls)


_MISTRAL_CALL_KEYS = {"name", "arguments", "parameters", "id"}


def _mistral_args_calls(body: str, tool_names: set[str]) -> tuple[ToolCall, ...]:
    decoder = json.JSONDecoder()
    calls: list[ToolCall] = []
    position = 0
    while position < len(body):
        match = _MISTRAL_ARGS_CALL.match(body, position)
        if match is None or match.group(1) not in tool_names:
            return ()
        try:
            arguments, position = decoder.raw_decode(body, match.end())
        except ValueError:
            return ()
        calls.append(_tool_call(f"call_{len(calls)}", match.group(1), arguments))
        position = len(body) - len(body[position:].lstrip())
    return tuple(calls)


def _python_calls(text: str, tool_names: set[str]) -> tuple[ToolCall, ...]:
    """Llama 3.2's ``[f(a=1, b="x"), g()]``: read with ``ast`` (never run), literal keyword arguments only."""
    body = text.strip().removeprefix(PYTHON_TAG).strip()
    if not (body.startswith("[") and body.endswith("]")) or "(" not in body:
        return ()
    try:
        tree = ast.parse(body, mode="eval").body
    except (SyntaxError, ValueError):
        return ()
    if not isinstance(tree, ast.List) or not tree.elts:
        return ()
    calls = []
    for index, node in enumerate(tree.elts):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name) or node.args:
            return ()
        if node.func.id not in tool_names or any(keyword.arg is None for keyword in node.keywords):
            return ()
        try:
            arguments = {keyword.arg: ast.literal_eval(keyword.value) for keyword in node.keywords}
            json.dumps(arguments)  # a set or bytes literal has no JSON form: not a call
        except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError):
            return ()
        calls.append(_tool_call(f"call_{index}", node.func.id, arguments))
    return tuple(calls)


def _tool_call(call_id: str, name: str, arguments) -> ToolCall:
    # Imported here: the backends import no Django, and importing the core package starts Celery's app.
    from finetune_studio.records import ToolCall

    return ToolCall(id=call_id, name=name, arguments=arguments_text(arguments))


def _block_call(body: str, number: int) -> ToolCall | None:
    try:
        value = json.loads(body)
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or not value["name"]:
        return None
    return _tool_call(f"call_{number}", value["name"], value.get("arguments"))


def template_turns(messages: Iterable[dict]) -> list[dict]:
    """OpenAI-shaped turns as transformers' chat templates read them: arguments as objects, content a string."""
    turns = []
    for message in messages:
        turn = dict(message)
        if turn.get("content") is None:
            turn["content"] = ""
        if message.get("tool_calls"):
            turn["tool_calls"] = [_with_object_arguments(call) for call in message["tool_calls"]]
        turns.append(turn)
    return turns


def ollama_turns(messages: Iterable[dict]) -> list[dict]:
    """OpenAI-shaped turns as Ollama's ``/api/chat`` takes them.

    An assistant's calls are ``[{"function": {"name", "arguments": <object>}}]`` (Ollama's ``ToolCall``; it
    refuses arguments given as a string); a tool result is ``{"role": "tool", "content", "tool_name"}``,
    Ollama naming the function whose result it is rather than the call's id.
    """
    turns = []
    for message in messages:
        turn: dict = {"role": message["role"], "content": message.get("content") or ""}
        if message.get("tool_calls"):
            turn["tool_calls"] = [
                {
                    "function": {
                        "name": call["function"]["name"],
                        "arguments": arguments_value(call["function"].get("arguments", "{}")),
                    }
                }
                for call in message["tool_calls"]
            ]
        if message["role"] == "tool" and message.get("name"):
            turn["tool_name"] = message["name"]
        turns.append(turn)
    return turns


def _with_object_arguments(call: dict) -> dict:
    function = dict(call.get("function") or {})
    if isinstance(function.get("arguments"), str):
        function["arguments"] = arguments_value(function["arguments"])
    return {**call, "function": function}


def answer_calls(message, content: str | None) -> tuple[str | None, tuple[ToolCall, ...]]:
    """(content, calls) of an answer's ``message`` (OpenAI's or Ollama's): a turn that only calls tools has no
    text, so its missing content is ``""``. Unreadable calls are a ``BadAnswer``, retried like malformed JSON."""
    given = message.get("tool_calls") if isinstance(message, dict) else None
    calls = calls_from_answer(given) if given else ()
    if calls is None:
        raise Transient("the answer's tool calls cannot be read", final=BadAnswer)
    return ("" if content is None and calls else content), calls


def calls_from_answer(given: Sequence) -> tuple[ToolCall, ...] | None:
    """The calls of an answer's ``tool_calls`` (OpenAI's or Ollama's shape), or None when they are unreadable.

    Arguments may come as text (OpenAI) or as an object (Ollama; some OpenAI-compatible servers too): both
    are read. Unreadable: not a list of ``{"function": {"name": <text>, …}}`` objects.
    """
    if not isinstance(given, list):
        return None
    calls = []
    for number, call in enumerate(given):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
            return None
        call_id = call.get("id") if isinstance(call.get("id"), str) and call.get("id") else f"call_{number}"
        calls.append(_tool_call(call_id, function["name"], function.get("arguments")))
    return tuple(calls)


__all__ = [
    "answer_calls",
    "arguments_text",
    "arguments_value",
    "calls_from_answer",
    "ollama_turns",
    "parse_tool_call_blocks",
    "parse_tool_calls",
    "template_turns",
]
