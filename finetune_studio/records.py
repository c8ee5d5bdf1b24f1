"""Reading training and test sets: JSON array, JSON lines or CSV, record by record, in five record formats.

One parser serves dataset upload validation (jobs), the trainers, the evaluation engine and the evaluation
CLI, so a file accepted at upload is read the same way everywhere. The record format is detected per record
and must be the same for the whole file:

- ``openai_chat``: ``{"messages": [{"role": "system"|"user"|"assistant"|"tool", "content": …, "weight": 0|1}, …],
  "tools": […]}`` (OpenAI chat fine-tuning JSONL, multi-turn; ``weight`` 0 keeps an assistant turn as context,
  untrained; with ``tools``, assistant turns may call them (``tool_calls``) and ``tool`` turns bring results);
- ``sharegpt``: ``{"conversations": [{"from": "system"|"human"|"gpt", "value": …}, …]}`` (optional top-level
  ``system``);
- ``alpaca``: ``{"instruction", "input", "output"}`` (optional ``system``);
- ``prompt_completion``: ``{"prompt", "completion"}``;
- ``text_label``: ``{"text", "label"}`` (JSON or CSV): the only classification format;
- ``preference``: OpenAI's preference (DPO) records, ``{"input": {"messages": […], "tools": […]},
  "preferred_output": [{"role": "assistant", "content": …}], "non_preferred_output": […]}``: the conversation is
  the input then the preferred answer (what evaluations compare against), ``rejected`` the other answer.

Every record becomes a ``Record`` holding its conversation (``messages``) and, for the readers that need one
string each, ``text`` (the last user turn) and ``label`` (the expected answer: the class of a text/label
record, the last assistant turn otherwise: for a turn that calls tools, ``tool_calls_text`` of its calls).
Only text/label records are classification data: nothing else is summarised as labels. Errors name the line
(or record), the message when there is one, and why.

A message turns into what each consumer speaks: ``openai_turn`` (OpenAI's chat API: tool-call arguments as a
JSON string) and ``template_turn`` (transformers' chat templates: arguments as an object).
"""

import csv
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

MAX_LINE_BYTES = 1024 * 1024
MAX_JSON_DEPTH = 20
# Rendering a conversation turn by turn costs its length times its turns: bound the turns.
MAX_MESSAGES = 256

OPENAI_CHAT = "openai_chat"
SHAREGPT = "sharegpt"
ALPACA = "alpaca"
PROMPT_COMPLETION = "prompt_completion"
TEXT_LABEL = "text_label"
PREFERENCE = "preference"
FORMAT_NAMES = {
    OPENAI_CHAT: "OpenAI chat",
    PREFERENCE: "preference (DPO)",
    SHAREGPT: "ShareGPT",
    ALPACA: "Alpaca",
    PROMPT_COMPLETION: "prompt/completion",
    TEXT_LABEL: "text/label",
}
CLASSIFICATION = "classification"
GENERATION = "generation"
TASK_NAMES = {CLASSIFICATION: "classification", GENERATION: "generation"}
# The metrics a comparison of each task reports (improvement, CI): what a promotion gate or a sweep may rank by.
METRICS_BY_TASK = {
    CLASSIFICATION: ("accuracy", "f1_macro"),
    GENERATION: ("exact_match", "token_f1", "rouge_l", "chrf"),
}
COMPARABLE_METRICS = tuple(metric for metrics in METRICS_BY_TASK.values() for metric in metrics)


# What a gate or a sweep compares by when none is named: the test set's task decides.
DEFAULT_METRIC_BY_TASK = {CLASSIFICATION: "accuracy", GENERATION: "token_f1"}
# ...unless most of its answers are tool calls: token overlap of the calls' JSON credits their keys alone, so the
# question such a set asks is "the same calls" (the generation evaluation's headline there too).
TOOL_CALLS_METRIC = "exact_match"


def task_of_metric(metric: str) -> str | None:
    """The task whose evaluations report ``metric`` (None: no comparison reports it)."""
    return next((task for task, metrics in METRICS_BY_TASK.items() if metric in metrics), None)


def mostly_tool_calls(*, tool_call_answers: int, records: int) -> bool:
    """Whether at least half of a test set's ``records`` are answered by a tool call."""
    return records > 0 and 2 * tool_call_answers >= records


def metric_for_test_set(metric: str | None, *, task: str | None, records: int = 0, tool_call_answers: int = 0) -> str:
    """The metric a gate or a sweep compares by on a test set of ``task`` (None: not known until it is read).

    None named: the task's default (accuracy, token F1 for a chat or instruction set), ``exact_match`` for a set
    at least half of whose ``records`` are answered by a tool call (``tool_call_answers``; the evaluation's own
    headline on such a set). Any comparable metric may be named, whatever the test set: the evaluations then
    score that metric's task, as an evaluation asked for that task would (accuracy on instruction records whose
    answers are labels, like the sample; token F1 on text/label records, the label being the reference).
    ValueError for a name no comparison reports.
    """
    if metric in (None, ""):
        if mostly_tool_calls(tool_call_answers=tool_call_answers, records=records):
            return TOOL_CALLS_METRIC
        return DEFAULT_METRIC_BY_TASK[task or CLASSIFICATION]
    if not isinstance(metric, str) or task_of_metric(metric) is None:
        raise ValueError(f"must be one of {', '.join(COMPARABLE_METRICS)}")
    return metric


ROLES = ("system", "user", "assistant", "tool")
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
SHAREGPT_TOOL_ROLES = {"tool", "function", "function_call", "observation", "ipython"}
SHAREGPT_TOOL_REFUSAL = (
    "tool calls are supported in OpenAI chat records only ('tools', assistant 'tool_calls', 'tool' messages)"
)
LEGACY_FUNCTIONS_REFUSAL = (
    "legacy function calling ('functions', 'function_call', 'function' messages) is not supported: give 'tools' "
    "and assistant 'tool_calls' with 'tool' messages, as OpenAI's fine-tuning does now"
)
# OpenAI's rule for function names.
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_TOOLS = 128


class RecordError(ValueError):
    def __init__(self, location: str, reason: str):
        super().__init__(f"{location}: {reason}")
        self.location = location
        self.reason = reason


@dataclass(frozen=True)
class ToolCall:
    """One call an assistant turn makes: ``arguments`` is the JSON object's text, as OpenAI's API carries it."""

    id: str
    name: str
    arguments: str

    def arguments_object(self) -> dict:
        return json.loads(self.arguments)

    def openai_call(self) -> dict:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


def tool_calls_text(calls) -> str:
    """Calls as one canonical text (names and arguments, keys sorted): the reference a tool-calling answer is
    scored against, and what a prediction's calls are written as, so that equal calls give equal texts.

    ``calls`` are ToolCalls or ``(name, arguments object)`` pairs.
    """
    pairs = [(call.name, call.arguments_object()) if isinstance(call, ToolCall) else call for call in calls]
    return json.dumps(
        [{"name": name, "arguments": arguments} for name, arguments in pairs], sort_keys=True, ensure_ascii=False
    )


@dataclass(frozen=True)
class Message:
    """One turn. ``weight`` matters on assistant turns only: 0 keeps the turn as context but teaches nothing.

    An assistant turn may call tools (``tool_calls``, its ``content`` then possibly empty); a ``tool`` turn is
    a call's result and names the call it answers (``tool_call_id``).
    """

    role: str
    content: str
    weight: int = 1
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""
    name: str = ""  # a tool turn: the function whose result it is

    @property
    def trained(self) -> bool:
        return self.role == "assistant" and self.weight == 1

    @property
    def answer(self) -> str:
        """What this turn answers: its calls' canonical text when it calls tools, else its content."""
        return tool_calls_text(self.tool_calls) if self.tool_calls else self.content.strip()

    def openai_turn(self) -> dict:
        """The turn as OpenAI's chat API takes it (a call's arguments as JSON text; no content beside calls: null)."""
        turn = self._turn(lambda call: call.openai_call())
        if self.tool_calls:
            turn["content"] = self.content or None
        return turn

    def template_turn(self) -> dict:
        """The turn as transformers' chat templates read it (a call's arguments as an object)."""
        return self._turn(
            lambda call: {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments_object()},
            }
        )

    def _turn(self, call_shape) -> dict:
        turn: dict = {"role": self.role, "content": self.content}
        if self.tool_calls:
            turn["tool_calls"] = [call_shape(call) for call in self.tool_calls]
        if self.role == "tool":
            turn["tool_call_id"] = self.tool_call_id
            if self.name:
                turn["name"] = self.name
        return turn


@dataclass(frozen=True)
class Record:
    text: str
    label: str
    instruction: str = ""
    input: str = ""
    raw: dict = field(default_factory=dict, compare=False, repr=False)
    format: str = TEXT_LABEL
    messages: tuple[Message, ...] = ()
    # OpenAI chat records that call tools: the function definitions, as given ({"type": "function", …}).
    tools: tuple[dict, ...] = ()
    # A preference record: the answer not preferred (the preferred one ends ``messages``).
    rejected: Message | None = None

    @property
    def task(self) -> str:
        return task_of(self.format)

    @property
    def answered_by_tool_call(self) -> bool:
        """Whether the record's last assistant turn calls tools (its ``label`` is then the calls' text)."""
        last = next((message for message in reversed(self.messages) if message.role == "assistant"), None)
        return last is not None and bool(last.tool_calls)

    @property
    def tool_names(self) -> tuple[str, ...]:
        """The names of the functions the record defines (``tools``), as given."""
        return tuple(tool["function"]["name"] for tool in self.tools)

    def conversation(self) -> tuple[Message, ...]:
        """The turns a chat model is trained on: the record's own, or user = text and assistant = label."""
        return self.messages or (Message("user", self.text), Message("assistant", self.label))


def task_of(record_format: str) -> str:
    return CLASSIFICATION if record_format == TEXT_LABEL else GENERATION


def detect_format(filename: str, head: bytes) -> str:
    """The file's encoding (json, jsonl or csv) from its name, else its first bytes."""
    lowered = filename.lower()
    if lowered.endswith(".csv"):
        return "csv"
    if lowered.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    stripped = head.lstrip()
    if stripped.startswith(b"["):
        return "json"
    if stripped.startswith(b"{"):
        return "jsonl"
    raise RecordError("file", "not a JSON array, JSON lines or CSV file (name it .json, .jsonl or .csv)")


# --- one record -------------------------------------------------------------------------------------
def record_format_of(obj: dict) -> str | None:
    if "preferred_output" in obj or "non_preferred_output" in obj:
        return PREFERENCE
    if "messages" in obj:
        return OPENAI_CHAT
    if "conversations" in obj:
        return SHAREGPT
    if "output" in obj and ("instruction" in obj or "input" in obj):
        return ALPACA
    if "prompt" in obj and "completion" in obj:
        return PROMPT_COMPLETION
    if "text" in obj and "label" in obj:
        return TEXT_LABEL
    return None


def record_from_object(obj, location: str) -> Record:
    if not isinstance(obj, dict):
        raise RecordError(location, f"expected a JSON object, got {type(obj).__name__}")
    record_format = record_format_of(obj)
    if record_format == OPENAI_CHAT:
        return _openai_chat(obj, location)
    if record_format == SHAREGPT:
        return _sharegpt(obj, location)
    if record_format == ALPACA:
        return _alpaca(obj, location)
    if record_format == PROMPT_COMPLETION:
        prompt = _string_field(obj, "prompt", location)
        completion = _string_field(obj, "completion", location)
        return _single_turn(obj, PROMPT_COMPLETION, system="", user=prompt, answer=completion)
    if record_format == TEXT_LABEL:
        return _text_label(obj, location)
    if record_format == PREFERENCE:
        return _preference(obj, location)
    keys = ", ".join(sorted(map(str, obj))[:8]) or "none"
    raise RecordError(
        location,
        "needs 'messages' (OpenAI chat), 'conversations' (ShareGPT), 'instruction'/'input' and 'output' "
        f"(Alpaca), 'prompt' and 'completion', or 'text' and 'label' (found: {keys})",
    )


def _text_label(obj: dict, location: str) -> Record:
    text, label = obj["text"], obj["label"]
    if not isinstance(text, str) or not text.strip():
        raise RecordError(location, "field 'text' must be a non-empty string")
    if isinstance(label, (int, float)) and not isinstance(label, bool):
        label = str(label)
    if not isinstance(label, str) or not label.strip():
        raise RecordError(location, "field 'label' must be a non-empty string")
    return Record(text=text, label=label.strip(), raw=obj)


def _string_field(obj: dict, name: str, location: str, *, required: bool = True) -> str:
    value = obj.get(name, "")
    if not isinstance(value, str):
        raise RecordError(location, f"field '{name}' must be a string")
    if required and not value.strip():
        raise RecordError(location, f"field '{name}' is empty")
    return value


def _single_turn(obj: dict, record_format: str, *, system: str, user: str, answer: str, **fields) -> Record:
    messages = ((Message("system", system),) if system.strip() else ()) + (
        Message("user", user),
        Message("assistant", answer),
    )
    return Record(text=user, label=answer.strip(), raw=obj, format=record_format, messages=messages, **fields)


def _alpaca(obj: dict, location: str) -> Record:
    instruction = _string_field(obj, "instruction", location, required=False)
    given_input = _string_field(obj, "input", location, required=False)
    output = _string_field(obj, "output", location)
    system = _string_field(obj, "system", location, required=False)
    if obj.get("history"):
        raise RecordError(location, "field 'history' is not supported: give multi-turn data as OpenAI chat records")
    text = "\n\n".join(part for part in (instruction.strip(), given_input.strip()) if part)
    if not text:
        raise RecordError(location, "fields 'instruction' and 'input' are both empty")
    return _single_turn(
        obj, ALPACA, system=system, user=text, answer=output, instruction=instruction, input=given_input
    )


def _content(value, where: str):
    """A message's text: a string, or OpenAI's list of ``{"type": "text", "text": …}`` parts."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for part in value:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind != "text" or not isinstance(part.get("text"), str):
                shown = kind if isinstance(kind, str) else type(part).__name__
                raise RecordError(where, f"only text content is supported (found a {shown[:40]!r} part)")
            parts.append(part["text"])
        return "".join(parts)
    if value is None:
        raise RecordError(where, "empty content")
    raise RecordError(where, f"content must be a string, got {type(value).__name__}")


def _weight(message: dict, role: str, where: str) -> int:
    if "weight" not in message:
        return 1
    weight = message["weight"]
    if role != "assistant":
        raise RecordError(where, "'weight' is only allowed on assistant messages")
    if isinstance(weight, bool) or weight not in (0, 1):
        raise RecordError(where, f"weight must be 0 or 1, got {json.dumps(weight)[:40]}")
    return int(weight)


def _tools(obj: dict, location: str) -> tuple[dict, ...]:
    """The record's function definitions (OpenAI's ``tools``), checked; () when it has none."""
    given = obj.get("tools")
    if given is None or given == []:
        return ()
    if not isinstance(given, list):
        raise RecordError(location, 'field \'tools\' must be a list of {"type": "function", "function": {…}}')
    if len(given) > MAX_TOOLS:
        raise RecordError(location, f"more than {MAX_TOOLS} tools in one record")
    names = set()
    for number, tool in enumerate(given, start=1):
        where = f"{location}: tool {number}"
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("function"), dict):
            raise RecordError(where, 'must be {"type": "function", "function": {"name": …, "parameters": {…}}}')
        function = tool["function"]
        name = function.get("name")
        if not isinstance(name, str) or not TOOL_NAME.match(name):
            raise RecordError(where, "the function needs a 'name' of 1 to 64 letters, digits, '_' or '-'")
        if name in names:
            raise RecordError(where, f"function {name!r} is defined twice")
        names.add(name)
        if "description" in function and not isinstance(function["description"], str):
            raise RecordError(where, f"function {name!r}: 'description' must be a string")
        if "parameters" in function and not isinstance(function["parameters"], dict):
            raise RecordError(where, f"function {name!r}: 'parameters' must be a JSON schema object")
    return tuple(given)


def _tool_calls(message: dict, where: str, tool_names: set[str]) -> tuple[ToolCall, ...]:
    given = message.get("tool_calls")
    if given is None or given == []:
        return ()
    if not isinstance(given, list):
        raise RecordError(where, "'tool_calls' must be a list")
    calls = []
    for number, call in enumerate(given, start=1):
        call_where = f"{where}: tool call {number}"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or call.get("type", "function") != "function":
            raise RecordError(
                call_where, 'must be {"id": …, "type": "function", "function": {"name": …, "arguments": "{…}"}}'
            )
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id.strip():
            raise RecordError(call_where, "needs an 'id' (the tool message with the result names it)")
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise RecordError(call_where, "needs the function's 'name'")
        if name not in tool_names:
            defined = ", ".join(sorted(tool_names)) or "none"
            raise RecordError(call_where, f"calls {name[:64]!r}, which the record's 'tools' do not define ({defined})")
        arguments = function.get("arguments", "{}")
        if isinstance(arguments, str):
            try:
                parsed = json.loads(arguments or "{}")
            except json.JSONDecodeError as exc:
                raise RecordError(call_where, f"'arguments' is not valid JSON ({exc.msg})") from None
        else:
            parsed = arguments
        if not isinstance(parsed, dict):
            raise RecordError(call_where, "'arguments' must be a JSON object (OpenAI gives it as a string)")
        calls.append(ToolCall(call_id, name, json.dumps(parsed, ensure_ascii=False)))
    return tuple(calls)


def _openai_chat(obj: dict, location: str) -> Record:
    messages, tools = _openai_turns(obj, location)
    return _conversation(obj, OPENAI_CHAT, messages, location, tools=tools)


def chat_prompt_from_openai(obj: dict, location: str = "request") -> tuple[tuple[Message, ...], tuple[dict, ...]]:
    """The turns and tools of a chat completion request (OpenAI's ``messages`` and ``tools``), checked as a
    training record's are, ending where the model is to answer: after a user turn or a tool result.
    ``developer`` turns (OpenAI's newer name for the system's) are system turns. RecordError names what is wrong.
    """
    given = obj.get("messages")
    if isinstance(given, list):
        given = [_developer_as_system(message) for message in given]
    messages, tools = _openai_turns({**obj, "messages": given}, location)
    if messages[-1].role not in ("user", "tool"):
        raise RecordError(location, "the last message must be the user's (or a tool's result): it is what is answered")
    return tuple(messages), tools


def _developer_as_system(message):
    if isinstance(message, dict) and message.get("role") == "developer":
        return {**message, "role": "system"}
    return message


def _openai_turns(obj: dict, location: str) -> tuple[list[Message], tuple[dict, ...]]:
    if "functions" in obj:
        raise RecordError(location, LEGACY_FUNCTIONS_REFUSAL)
    tools = _tools(obj, location)
    tool_names = {tool["function"]["name"] for tool in tools}
    given = obj.get("messages")
    if not isinstance(given, list) or not given:
        raise RecordError(location, "field 'messages' must be a non-empty list")
    if len(given) > MAX_MESSAGES:
        raise RecordError(location, f"more than {MAX_MESSAGES} messages in one record")
    messages = []
    open_calls: dict[str, str] = {}  # call id → function name, until a tool message answers it
    call_ids: set[str] = set()  # every call id so far: one may not be used twice
    for number, message in enumerate(given, start=1):
        where = f"{location}: message {number}"
        if not isinstance(message, dict):
            raise RecordError(where, f"expected an object, got {type(message).__name__}")
        role = message.get("role")
        if not isinstance(role, str):
            raise RecordError(where, "needs a 'role' (system, user, assistant or tool)")
        if role == "function" or message.get("function_call"):
            raise RecordError(where, LEGACY_FUNCTIONS_REFUSAL)
        if role not in ROLES:
            raise RecordError(where, f"unknown role {role[:40]!r} (system, user, assistant or tool)")
        where = f"{where} ({role})"
        if message.get("tool_calls") and role != "assistant":
            raise RecordError(where, "only assistant messages may have 'tool_calls'")
        calls = _tool_calls(message, where, tool_names) if role == "assistant" else ()
        if calls:
            content = "" if message.get("content") is None else _content(message["content"], where)
        else:
            content = _content(message.get("content"), where)
            if role != "tool" and not content.strip():
                raise RecordError(where, "empty content")
        weight = _weight(message, role, where)
        if role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or call_id not in open_calls:
                waiting = ", ".join(open_calls) or "none"
                raise RecordError(
                    where,
                    f"'tool_call_id' must name an earlier assistant tool call still waiting for its result ({waiting})",
                )
            name = open_calls.pop(call_id)
            messages.append(Message(role, content, tool_call_id=call_id, name=name))
            continue
        for call in calls:
            if call.id in call_ids:
                raise RecordError(where, f"tool call id {call.id[:64]!r} is used twice")
            call_ids.add(call.id)
            open_calls[call.id] = call.name
        messages.append(Message(role, content, weight, tool_calls=calls))
    return messages, tools


def _preference(obj: dict, location: str) -> Record:
    """OpenAI's preference record: a conversation up to a user turn, and two answers to it, the first preferred."""
    given = obj.get("input")
    if not isinstance(given, dict) or "messages" not in given:
        raise RecordError(location, 'a preference record needs "input": {"messages": [...]} (the conversation so far)')
    unknown = sorted(set(given) - {"messages", "tools", "parallel_tool_calls"})
    if unknown:
        raise RecordError(location, f"'input' has unknown keys: {', '.join(map(str, unknown))[:80]}")
    try:
        prompt, tools = chat_prompt_from_openai(given, location)
    except RecordError as exc:
        if exc.location.startswith(f"{location}: message"):
            raise RecordError(exc.location.replace(location, f"{location}: input", 1), exc.reason) from None
        raise
    preferred = _preference_answer(obj, "preferred_output", location)
    rejected = _preference_answer(obj, "non_preferred_output", location)
    if preferred.content.strip() == rejected.content.strip():
        raise RecordError(location, "the preferred and the non-preferred answers are the same: nothing to prefer")
    return replace(_conversation(obj, PREFERENCE, [*prompt, preferred], location, tools=tools), rejected=rejected)


def _preference_answer(obj: dict, name: str, location: str) -> Message:
    given = obj.get(name)
    where = f"{location}: {name}"
    if not isinstance(given, list) or len(given) != 1 or not isinstance(given[0], dict):
        raise RecordError(where, 'must be a list of one assistant message: [{"role": "assistant", "content": "…"}]')
    message = given[0]
    if message.get("role") != "assistant":
        raise RecordError(where, f"must be the assistant's answer, got role {str(message.get('role'))[:40]!r}")
    if message.get("tool_calls"):
        raise RecordError(where, "answers that call tools are not supported in preference records: text answers only")
    content = _content(message.get("content"), where)
    if not content.strip():
        raise RecordError(where, "empty content")
    return Message("assistant", content)


def _sharegpt(obj: dict, location: str) -> Record:
    given = obj["conversations"]
    if not isinstance(given, list) or not given:
        raise RecordError(location, "field 'conversations' must be a non-empty list")
    if len(given) > MAX_MESSAGES:
        raise RecordError(location, f"more than {MAX_MESSAGES} turns in one record")
    if obj.get("tools"):
        raise RecordError(location, SHAREGPT_TOOL_REFUSAL)
    system = _string_field(obj, "system", location, required=False)
    messages = [Message("system", system)] if system.strip() else []
    for number, turn in enumerate(given, start=1):
        where = f"{location}: turn {number}"
        if not isinstance(turn, dict):
            raise RecordError(where, f"expected an object, got {type(turn).__name__}")
        speaker = turn.get("from")
        if not isinstance(speaker, str):
            raise RecordError(where, "needs 'from' (system, human or gpt)")
        if speaker in SHAREGPT_TOOL_ROLES:
            raise RecordError(where, SHAREGPT_TOOL_REFUSAL)
        if speaker not in SHAREGPT_ROLES:
            raise RecordError(where, f"unknown role {speaker[:40]!r} (system, human or gpt)")
        role = SHAREGPT_ROLES[speaker]
        where = f"{where} ({speaker})"
        value = turn.get("value")
        if value is None:
            raise RecordError(where, "empty content")
        if not isinstance(value, str):
            raise RecordError(where, f"'value' must be a string, got {type(value).__name__}")
        if not value.strip():
            raise RecordError(where, "empty content")
        messages.append(Message(role, value, _weight(turn, role, where)))
    return _conversation(obj, SHAREGPT, messages, location)


def _conversation(
    obj: dict, record_format: str, messages: list[Message], location: str, *, tools: tuple[dict, ...] = ()
) -> Record:
    if not any(message.role == "assistant" for message in messages):
        raise RecordError(location, "no assistant turn to learn from")
    if not any(message.trained for message in messages):
        raise RecordError(location, "no assistant turn to learn from (every assistant turn has weight 0)")
    last_answer = max(index for index, message in enumerate(messages) if message.role == "assistant")
    questions = [message for message in messages[:last_answer] if message.role == "user"]
    if not questions:
        raise RecordError(location, "no user turn before the assistant's answer")
    return Record(
        text=questions[-1].content,
        label=messages[last_answer].answer,
        raw=obj,
        format=record_format,
        messages=tuple(messages),
        tools=tools,
    )


class _OneFormat:
    """Every record of a file has the first record's format; the refusal names both lines."""

    def __init__(self):
        self.first: tuple[str, str] | None = None

    def check(self, record: Record, location: str) -> Record:
        if self.first is None:
            self.first = (record.format, location)
        elif record.format != self.first[0]:
            first_format, first_location = self.first
            raise RecordError(
                location,
                f"this record is {FORMAT_NAMES[record.format]}, but {first_location} is {FORMAT_NAMES[first_format]}: "
                "mixed formats in one file (one record format per file)",
            )
        return record


def _check_depth(line: bytes | str, location: str) -> None:
    depth = deepest = 0
    in_string = escaped = False
    for ch in line if isinstance(line, str) else line.decode("utf-8", "replace"):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_JSON_DEPTH:
                raise RecordError(location, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        elif ch in "]}":
            depth -= 1


def _decode(line: bytes, location: str) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordError(location, f"not valid UTF-8 (byte {exc.start})") from None


def _lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Split a byte stream into lines, refusing any line over MAX_LINE_BYTES (bounded memory)."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        yield from complete
        if len(pending) > MAX_LINE_BYTES:
            raise RecordError("line", f"a line is longer than {MAX_LINE_BYTES} bytes")
    if pending:
        yield pending


def iter_jsonl(chunks: Iterable[bytes]) -> Iterator[Record]:
    one_format = _OneFormat()
    for number, line in enumerate(_lines(chunks), start=1):
        location = f"line {number}"
        if len(line) > MAX_LINE_BYTES:
            raise RecordError(location, f"longer than {MAX_LINE_BYTES} bytes")
        text = _decode(line, location).strip()
        if not text:
            continue
        _check_depth(text, location)
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RecordError(location, f"invalid JSON ({exc.msg} at column {exc.colno})") from None
        yield one_format.check(record_from_object(obj, location), location)


def iter_json_array(chunks: Iterable[bytes], *, max_bytes: int = 256 * 1024 * 1024) -> Iterator[Record]:
    """A JSON array is parsed whole; its size is bounded by ``max_bytes``."""
    data = bytearray()
    for chunk in chunks:
        data += chunk
        if len(data) > max_bytes:
            raise RecordError("file", f"a JSON array file is limited to {max_bytes} bytes; use JSON lines")
    text = _decode(bytes(data), "file")
    _check_depth(text, "file")
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordError(f"line {exc.lineno}", f"invalid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(items, list):
        raise RecordError("file", "the top level must be a JSON array of records")
    one_format = _OneFormat()
    for index, obj in enumerate(items, start=1):
        yield one_format.check(record_from_object(obj, f"record {index}"), f"record {index}")


def iter_csv(chunks: Iterable[bytes]) -> Iterator[Record]:
    lines = (_decode(line, "line") + "\n" for line in _lines(chunks))
    reader = csv.DictReader(lines)
    if not reader.fieldnames or not {"text", "label"} <= {name.strip() for name in reader.fieldnames}:
        raise RecordError("line 1", "a CSV file needs a header row with 'text' and 'label' columns")
    for row in reader:
        location = f"line {reader.line_num}"
        if None in row:
            raise RecordError(location, "more fields than the header has")
        # A CSV file is text/label whatever other columns it has.
        yield _text_label({k.strip(): (v or "") for k, v in row.items()}, location)


def iter_records(chunks: Iterable[bytes], fmt: str) -> Iterator[Record]:
    if fmt == "jsonl":
        return iter_jsonl(chunks)
    if fmt == "json":
        return iter_json_array(chunks)
    if fmt == "csv":
        return iter_csv(chunks)
    raise RecordError("file", f"unknown format {fmt!r}")


def read_records_from_bytes(data: bytes, filename: str) -> list[Record]:
    return list(iter_records([data], detect_format(filename, data[:64])))


def open_records(path: str) -> list[Record]:
    """Read a local file (the CLI's way in)."""
    with open(path, "rb") as handle:
        head = handle.read(64)
        handle.seek(0)
        return list(iter_records(iter(lambda: handle.read(1 << 20), b""), detect_format(path, head)))


__all__ = [
    "CLASSIFICATION",
    "FORMAT_NAMES",
    "GENERATION",
    "Message",
    "Record",
    "RecordError",
    "ToolCall",
    "detect_format",
    "iter_records",
    "open_records",
    "read_records_from_bytes",
    "task_of",
    "tool_calls_text",
]
