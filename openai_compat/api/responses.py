"""OpenAI's Responses API (``client.responses.create``) on the studio's chat: the request read as the chat
completion it amounts to (so both are checked by one set of rules), and the answer shaped as OpenAI's ``response``
object, or its stream of typed events.

Offered: ``input`` as a string or a list of message, ``function_call`` and ``function_call_output`` items (a
previous ``response.output`` may be passed back as input), ``instructions``, ``max_output_tokens``,
``temperature``, ``top_p``, ``text.format`` (text, json_object, json_schema), function ``tools`` with
``tool_choice`` auto/none, ``stream``. The studio keeps no responses, so ``store: true``, ``previous_response_id``
and ``background`` are refused by name, as is any field it does not know.
"""

from __future__ import annotations

import uuid

from rest_framework import serializers

from finetune_studio.api import RefusesUnknownFields

from .serializers import ChatCompletionSerializer, served_by

# The chat completion's fields → the Responses API's, for its refusals.
_PARAMS = {"messages": "input", "max_tokens": "max_output_tokens", "response_format": "text"}
_TEXT_PARTS = ("input_text", "output_text", "text")


class ResponseCreateSerializer(RefusesUnknownFields, serializers.Serializer):
    """OpenAI's ``responses.create`` body, as far as the studio honours it. Read into the chat completion's values
    (``ChatCompletionSerializer``) plus ``echo``: what the response object repeats back."""

    model = serializers.CharField(max_length=256)
    input = serializers.JSONField()
    instructions = serializers.CharField(required=False, allow_null=True, allow_blank=True)
    max_output_tokens = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    temperature = serializers.JSONField(required=False, allow_null=True)
    top_p = serializers.JSONField(required=False, allow_null=True)
    text = serializers.JSONField(required=False, allow_null=True)
    tools = serializers.JSONField(required=False, allow_null=True)
    tool_choice = serializers.JSONField(required=False, allow_null=True)
    parallel_tool_calls = serializers.BooleanField(required=False, allow_null=True)
    stream = serializers.BooleanField(required=False, allow_null=True)
    stream_options = serializers.JSONField(required=False, allow_null=True)
    store = serializers.BooleanField(required=False, allow_null=True)
    previous_response_id = serializers.CharField(required=False, allow_null=True, allow_blank=True)
    background = serializers.BooleanField(required=False, allow_null=True)
    include = serializers.JSONField(required=False, allow_null=True)
    reasoning = serializers.JSONField(required=False, allow_null=True)
    truncation = serializers.ChoiceField(choices=["auto", "disabled"], required=False, allow_null=True)
    metadata = serializers.DictField(child=serializers.CharField(max_length=512), required=False, allow_null=True)
    user = serializers.CharField(required=False, allow_null=True, allow_blank=True, max_length=256)
    safety_identifier = serializers.CharField(required=False, allow_null=True, allow_blank=True, max_length=256)
    prompt_cache_key = serializers.CharField(required=False, allow_null=True, allow_blank=True, max_length=256)
    service_tier = serializers.CharField(required=False, allow_null=True, max_length=32)

    def unknown_field_error(self, name: str) -> str:
        return f"Not offered by the studio's responses; they take: {', '.join(field for field in self.fields)}."

    def validate_store(self, value):
        if value:
            raise serializers.ValidationError("the studio keeps no responses: store must be false (or left out)")
        return value

    def validate_previous_response_id(self, value):
        if value:
            raise serializers.ValidationError(
                "the studio keeps no responses to continue from: send the conversation so far as input "
                "(a previous response's output items may be passed back as they are)"
            )
        return value

    def validate_background(self, value):
        if value:
            raise serializers.ValidationError("background responses are not offered: background must be false")
        return value

    def validate_include(self, value):
        if value:
            raise serializers.ValidationError("nothing extra can be included: include must be empty")
        return value

    def validate_reasoning(self, value):
        if isinstance(value, dict) and any(value.get(key) is not None for key in ("effort", "summary")):
            raise serializers.ValidationError("the studio's models do not reason apart: reasoning must be left out")
        return value

    def validate(self, attrs):
        tools = _chat_tools(attrs.get("tools"))
        chat_body = {
            "model": attrs["model"],
            "messages": _chat_messages(attrs["input"], attrs.get("instructions")),
            "tools": tools or None,
            "tool_choice": attrs.get("tool_choice"),
            "parallel_tool_calls": attrs.get("parallel_tool_calls"),
            "max_tokens": attrs.get("max_output_tokens"),
            "temperature": attrs.get("temperature"),
            "top_p": attrs.get("top_p"),
            "response_format": _response_format(attrs.get("text")),
            "stream": attrs.get("stream"),
        }
        chat = ChatCompletionSerializer(data={key: value for key, value in chat_body.items() if value is not None})
        if not chat.is_valid():
            raise serializers.ValidationError({_PARAMS.get(key, key): value for key, value in chat.errors.items()})
        values = chat.validated_data
        options = values["options"]
        values["echo"] = {
            "instructions": attrs.get("instructions") or None,
            "max_output_tokens": attrs.get("max_output_tokens"),
            "temperature": options.temperature,
            "top_p": options.top_p,
            "text": {"format": (attrs.get("text") or {}).get("format") or {"type": "text"}},
            "tools": list(attrs.get("tools") or []),
            "tool_choice": attrs.get("tool_choice") or "auto",
            "parallel_tool_calls": attrs.get("parallel_tool_calls") is not False,
            "truncation": attrs.get("truncation") or "disabled",
            "metadata": attrs.get("metadata") or {},
            "user": attrs.get("user"),
        }
        return values


def _chat_messages(given, instructions: str | None) -> list:
    """The Responses API's input as chat completion messages (OpenAI's chat shape), instructions first."""
    messages: list[dict] = [{"role": "system", "content": instructions}] if instructions else []
    if isinstance(given, str):
        return [*messages, {"role": "user", "content": given}]
    if not isinstance(given, list) or not given:
        raise serializers.ValidationError({"input": ["a string, or a non-empty list of input items"]})
    for index, item in enumerate(given):
        where = f"input[{index}]"
        if not isinstance(item, dict):
            raise serializers.ValidationError({"input": [f"{where}: an input item is an object"]})
        kind = item.get("type", "message")
        if kind == "message":
            content = item.get("content")
            text = content if isinstance(content, str) else _text_of(content, where)
            messages.append({"role": item.get("role"), "content": text})
        elif kind == "function_call":
            call = {
                "id": item.get("call_id"),
                "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments")},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)  # the same turn's text, or its other calls
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": item.get("output")})
        else:
            raise serializers.ValidationError(
                {
                    "input": [
                        f"{where}: items of type {kind!r} are not offered (message, function_call and "
                        "function_call_output are)"
                    ]
                }
            )
    return messages


def _text_of(parts, where: str) -> str:
    if not isinstance(parts, list) or not parts:
        raise serializers.ValidationError({"input": [f"{where}: content is a string or a list of text parts"]})
    texts = []
    for part in parts:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in _TEXT_PARTS or not isinstance(part.get("text"), str):
            raise serializers.ValidationError(
                {"input": [f"{where}: the studio's models read text: a {kind or 'non-text'} part is not offered"]}
            )
        texts.append(part["text"])
    return "\n".join(texts)


def _chat_tools(tools) -> list:
    """Function tools as chat completions carry them; other kinds of tool are refused."""
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise serializers.ValidationError({"tools": ["a list of function tools"]})
    chat_tools = []
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise serializers.ValidationError(
                {"tools": [f"tools[{index}]: only function tools are offered, not {kind!r}"]}
            )
        function = {key: tool[key] for key in ("name", "description", "parameters") if tool.get(key) is not None}
        chat_tools.append({"type": "function", "function": function})
    return chat_tools


def _response_format(text) -> dict | None:
    if text is None:
        return None
    if not isinstance(text, dict):
        raise serializers.ValidationError({"text": ['an object: {"format": {"type": …}}']})
    described = text.get("format")
    if described is None:
        return None
    if not isinstance(described, dict):
        raise serializers.ValidationError({"text": ['format is {"type": "text" | "json_object" | "json_schema"}']})
    if described.get("type") == "json_schema":
        return {
            "type": "json_schema",
            "json_schema": {"name": described.get("name"), "schema": described.get("schema")},
        }
    return {"type": described.get("type")}


# --- The answer ----------------------------------------------------------------------------------


def response_id(completion_id: str) -> str:
    return "resp_" + completion_id.removeprefix("chatcmpl-")


def response_object(completion, echo: dict) -> dict:
    """OpenAI's ``response`` for one answer: its message and function calls as output items."""
    return _response(completion.id, completion.created, completion.target, echo, completion=completion)


def _response(completion_id, created, target, echo: dict, *, completion=None) -> dict:
    if completion is None:
        status, output, usage, incomplete = "in_progress", [], None, None
    else:
        cut = completion.finish_reason == "length"
        status = "incomplete" if cut else "completed"
        incomplete = {"reason": "max_output_tokens"} if cut else None
        output = _output_items(completion, status)
        usage = _usage(completion.answer)
    body = {
        "id": response_id(completion_id),
        "object": "response",
        "created_at": created,
        "status": status,
        "error": None,
        "incomplete_details": incomplete,
        "model": target.name,
        "output": output,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": False,
        "usage": usage,
        **echo,
    }
    if completion is not None:
        body["studio"] = served_by(completion)
    return body


def _message_id(completion_id: str) -> str:
    return "msg_" + completion_id.removeprefix("chatcmpl-")


def _message_item(completion_id: str, text: str, status: str) -> dict:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    return {
        "type": "message",
        "id": _message_id(completion_id),
        "status": status,
        "role": "assistant",
        "content": content,
    }


def _call_item(call, status: str) -> dict:
    return {
        "type": "function_call",
        "id": f"fc_{uuid.uuid4().hex}",
        "call_id": call.id,
        "name": call.name,
        "arguments": call.arguments,
        "status": status,
    }


def _output_items(completion, status: str) -> list:
    items = []
    if completion.answer.content or not completion.tool_calls:
        items.append(_message_item(completion.id, completion.answer.content, status))
    items.extend(_call_item(call, "completed") for call in completion.tool_calls)
    return items


def _usage(answer) -> dict | None:
    if answer.prompt_tokens is None or answer.completion_tokens is None:
        return None
    return {
        "input_tokens": answer.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": answer.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": answer.prompt_tokens + answer.completion_tokens,
    }


def response_events(stream, echo: dict):
    """OpenAI's typed stream for a ChatStream: created, the message's text as it comes, each function call, then
    completed (incomplete when cut at max_output_tokens). An error after the first piece ends it with an error
    event."""
    from finetune_studio.errors import DomainError

    numbers = iter(range(1_000_000_000))

    def event(kind: str, **fields) -> dict:
        return {"type": kind, "sequence_number": next(numbers), **fields}

    started = _response(stream.id, stream.created, stream.target, echo)
    yield event("response.created", response=started)
    yield event("response.in_progress", response=started)
    message = {"item_id": _message_id(stream.id), "output_index": 0}
    text, opened = "", False
    try:
        for piece in stream.pieces:
            if isinstance(piece, str):
                if not opened:
                    yield from _message_opened(event, stream.id, message)
                    opened = True
                text += piece
                yield event("response.output_text.delta", **message, content_index=0, delta=piece, logprobs=[])
                continue
            final = _response(piece.id, piece.created, piece.target, echo, completion=piece)
            index = 0
            if piece.answer.content or not piece.tool_calls:
                if not opened:
                    yield from _message_opened(event, stream.id, message)
                part = {"type": "output_text", "text": piece.answer.content, "annotations": [], "logprobs": []}
                yield event(
                    "response.output_text.done", **message, content_index=0, text=piece.answer.content, logprobs=[]
                )
                yield event("response.content_part.done", **message, content_index=0, part=part)
                yield event("response.output_item.done", output_index=0, item=final["output"][0])
                index = 1
            for item in final["output"][index:]:
                yield event("response.output_item.added", output_index=index, item={**item, "status": "in_progress"})
                common = {"item_id": item["id"], "output_index": index}
                yield event("response.function_call_arguments.delta", **common, delta=item["arguments"])
                yield event("response.function_call_arguments.done", **common, arguments=item["arguments"])
                yield event("response.output_item.done", output_index=index, item=item)
                index += 1
            done = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
            yield event(done, response=final)
    except DomainError as exc:
        yield event("error", code=None, message=str(exc), param=None)
    finally:
        stream.pieces.close()


def _message_opened(event, completion_id: str, message: dict):
    yield event(
        "response.output_item.added",
        output_index=0,
        item={**_message_item(completion_id, "", "in_progress"), "content": []},
    )
    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    yield event("response.content_part.added", **message, content_index=0, part=part)
