"""The record reader: five record formats, one per file, every bad record named by its line and why."""

import json

import pytest

from finetune_studio.records import (
    Message,
    RecordError,
    ToolCall,
    metric_for_test_set,
    read_records_from_bytes,
    tool_calls_text,
)
from tests.factories import function_tool, tool_call


def jsonl(*rows) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def chat(*turns, **extra) -> dict:
    return {
        "messages": [dict(zip(("role", "content"), turn[:2]), **(turn[2] if len(turn) > 2 else {})) for turn in turns],
        **extra,
    }


WEATHER = function_tool("get_weather", "city", description="Current weather in a city")


def refusal(data: bytes, filename: str = "t.jsonl") -> RecordError:
    with pytest.raises(RecordError) as info:
        read_records_from_bytes(data, filename)
    return info.value


# --- accepted ----------------------------------------------------------------------------------------
def test_it_reads_openai_chat_records_multi_turn_with_weights():
    data = jsonl(
        chat(
            ("system", "You are terse."),
            ("user", "Hi"),
            ("assistant", "Hello.", {"weight": 0}),
            ("user", "Capital of France?"),
            ("assistant", "Paris.", {"weight": 1}),
        ),
        chat(("user", "2+2?"), ("assistant", "4")),
    )
    first, second = read_records_from_bytes(data, "chat.jsonl")
    assert (first.format, first.task) == ("openai_chat", "generation")
    assert first.messages == (
        Message("system", "You are terse."),
        Message("user", "Hi"),
        Message("assistant", "Hello.", weight=0),
        Message("user", "Capital of France?"),
        Message("assistant", "Paris."),
    )
    assert [message.trained for message in first.messages] == [False, False, False, False, True]
    assert (first.text, first.label) == ("Capital of France?", "Paris.")
    assert second.conversation() == (Message("user", "2+2?"), Message("assistant", "4"))


def test_it_reads_openai_tool_calling_records_with_their_tools_calls_and_results():
    data = jsonl(
        chat(
            ("user", "Weather in Paris and Rome?"),
            (
                "assistant",
                None,
                {
                    "tool_calls": [
                        tool_call("c1", "get_weather", {"city": "Paris"}),
                        tool_call("c2", "get_weather", {"city": "Rome"}),
                    ]
                },
            ),
            ("tool", "18C", {"tool_call_id": "c1"}),
            ("tool", "24C", {"tool_call_id": "c2"}),
            ("assistant", "Paris 18C, Rome 24C."),
            tools=[WEATHER],
        ),
        chat(
            ("user", "Weather in Oslo?"),
            ("assistant", "Let me look.", {"tool_calls": [tool_call("x", "get_weather", '{"city": "Oslo"}')]}),
            tools=[WEATHER],
        ),
    )
    answered, calling = read_records_from_bytes(data, "tools.jsonl")
    assert answered.tools == (WEATHER,)
    assert [m.role for m in answered.messages] == ["user", "assistant", "tool", "tool", "assistant"]
    assert answered.messages[1].tool_calls == (
        ToolCall("c1", "get_weather", '{"city": "Paris"}'),
        ToolCall("c2", "get_weather", '{"city": "Rome"}'),
    )
    assert answered.messages[3] == Message("tool", "24C", tool_call_id="c2", name="get_weather")
    assert [m.trained for m in answered.messages] == [False, True, False, False, True]
    assert (answered.text, answered.label) == ("Weather in Paris and Rome?", "Paris 18C, Rome 24C.")
    # A last turn that calls a tool is answered by its calls, written canonically.
    assert calling.label == '[{"arguments": {"city": "Oslo"}, "name": "get_weather"}]'
    assert calling.label == tool_calls_text([("get_weather", {"city": "Oslo"})])
    # What a dataset counts: the functions defined, and whether the record is answered by a call.
    assert (answered.tool_names, calling.tool_names) == (("get_weather",), ("get_weather",))
    assert (answered.answered_by_tool_call, calling.answered_by_tool_call) == (False, True)


@pytest.mark.parametrize(
    ("task", "records", "tool_call_answers", "expected"),
    [
        ("generation", 60, 50, "exact_match"),
        ("generation", 10, 5, "exact_match"),  # half: the evaluation's headline is exact_match too
        ("generation", 11, 5, "token_f1"),
        ("generation", 240, 0, "token_f1"),
        ("generation", 0, 0, "token_f1"),
        ("classification", 30, 0, "accuracy"),
        (None, 0, 0, "accuracy"),
    ],
)
def test_a_test_set_mostly_answered_by_tool_calls_is_compared_by_exact_match(
    task, records, tool_call_answers, expected
):
    chosen = metric_for_test_set(None, task=task, records=records, tool_call_answers=tool_call_answers)
    assert chosen == expected
    # A metric that is named always wins.
    assert metric_for_test_set("chrf", task=task, records=records, tool_call_answers=tool_call_answers) == "chrf"


def test_a_tool_calling_turn_speaks_openai_and_chat_template_shapes():
    [record] = read_records_from_bytes(
        jsonl(
            chat(
                ("user", "Paris?"),
                ("assistant", None, {"tool_calls": [tool_call("c1", "get_weather", {"city": "Paris"})]}),
                ("tool", "18C", {"tool_call_id": "c1"}),
                ("assistant", "18C."),
                tools=[WEATHER],
            )
        ),
        "t.jsonl",
    )
    calling, result = record.messages[1], record.messages[2]
    assert calling.openai_turn() == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
        ],
    }
    assert calling.template_turn()["tool_calls"] == [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    ]
    assert result.openai_turn() == {"role": "tool", "content": "18C", "tool_call_id": "c1", "name": "get_weather"}
    assert record.messages[0].openai_turn() == {"role": "user", "content": "Paris?"}


def test_it_reads_openai_text_content_parts():
    data = jsonl(
        chat(("user", [{"type": "text", "text": "Say "}, {"type": "text", "text": "hi"}]), ("assistant", "hi"))
    )
    [record] = read_records_from_bytes(data, "chat.jsonl")
    assert record.messages[0] == Message("user", "Say hi")


def test_it_reads_sharegpt_conversations_and_a_top_level_system():
    data = jsonl(
        {
            "conversations": [
                {"from": "system", "value": "Be kind."},
                {"from": "human", "value": "Hi"},
                {"from": "gpt", "value": "Hello!"},
            ]
        },
        {"system": "Be brief.", "conversations": [{"from": "human", "value": "Bye"}, {"from": "gpt", "value": "Bye."}]},
    )
    first, second = read_records_from_bytes(data, "share.jsonl")
    assert (first.format, first.task) == ("sharegpt", "generation")
    assert first.messages == (Message("system", "Be kind."), Message("user", "Hi"), Message("assistant", "Hello!"))
    assert second.messages[0] == Message("system", "Be brief.")


def test_it_reads_alpaca_as_generation_without_inventing_labels():
    data = jsonl(
        {"instruction": "Translate to French", "input": "cat", "output": "chat"},
        {"instruction": "Name a colour", "input": "", "output": "blue", "system": "One word."},
    )
    first, second = read_records_from_bytes(data, "alpaca.jsonl")
    assert (first.format, first.task) == ("alpaca", "generation")
    assert first.messages == (Message("user", "Translate to French\n\ncat"), Message("assistant", "chat"))
    assert second.messages == (
        Message("system", "One word."),
        Message("user", "Name a colour"),
        Message("assistant", "blue"),
    )
    # The evaluation engine still reads the instruction, the input and the expected answer.
    assert (first.instruction, first.input, first.text, first.label) == (
        "Translate to French",
        "cat",
        "Translate to French\n\ncat",
        "chat",
    )


def test_it_reads_prompt_completion_records():
    [record] = read_records_from_bytes(jsonl({"prompt": "Once upon", "completion": " a time"}), "pc.jsonl")
    assert (record.format, record.task) == ("prompt_completion", "generation")
    assert record.messages == (Message("user", "Once upon"), Message("assistant", " a time"))


def test_only_text_label_records_are_classification():
    [record] = read_records_from_bytes(
        jsonl({"text": "Either party may terminate.", "label": "termination"}), "t.jsonl"
    )
    assert (record.format, record.task, record.label) == ("text_label", "classification", "termination")
    assert record.conversation() == (
        Message("user", "Either party may terminate."),
        Message("assistant", "termination"),
    )


def test_it_reads_a_json_array_and_csv():
    assert read_records_from_bytes(b'[{"text": "a", "label": "x"}]', "t.json")[0].label == "x"
    csv_records = read_records_from_bytes(b'text,label,output\n"Hello, world",greeting,x\n', "t.csv")
    assert (csv_records[0].text, csv_records[0].format) == ("Hello, world", "text_label")
    chats = read_records_from_bytes(json.dumps([chat(("user", "a"), ("assistant", "b"))]).encode(), "c.json")
    assert chats[0].format == "openai_chat"


# --- refused -----------------------------------------------------------------------------------------
OK = chat(("user", "hi"), ("assistant", "hello"))


@pytest.mark.parametrize(
    ("row", "location", "reason"),
    [
        (chat(("user", "hi")), "line 2", "no assistant turn to learn from"),
        (chat(("user", "hi"), ("assistant", "x", {"weight": 0})), "line 2", "every assistant turn has weight 0"),
        (chat(("user", "hi"), ("assistant", "  ")), "line 2: message 2 (assistant)", "empty content"),
        (chat(("user", None), ("assistant", "x")), "line 2: message 1 (user)", "empty content"),
        (chat(("narrator", "hi"), ("assistant", "x")), "line 2: message 1", "unknown role 'narrator'"),
        (
            chat(("user", "hi"), ("assistant", "x", {"weight": 2})),
            "line 2: message 2 (assistant)",
            "weight must be 0 or 1, got 2",
        ),
        (
            chat(("user", "hi"), ("assistant", "x", {"weight": True})),
            "line 2: message 2 (assistant)",
            "weight must be 0 or 1",
        ),
        (chat(("user", "hi"), ("assistant", "x", {"weight": "1"})), "line 2: message 2 (assistant)", 'got "1"'),
        (
            chat(("user", "hi", {"weight": 1}), ("assistant", "x")),
            "line 2: message 1 (user)",
            "only allowed on assistant",
        ),
        (chat(("assistant", "x"), ("user", "hi")), "line 2", "no user turn before the assistant"),
        (
            chat(("user", "hi"), ("assistant", None, {"tool_calls": [{"id": "1"}]})),
            "line 2: message 2 (assistant): tool call 1",
            'must be {"id": …, "type": "function"',
        ),
        (
            chat(("user", "hi"), ("assistant", None, {"tool_calls": [tool_call("c1", "get_weather", {})]})),
            "line 2: message 2 (assistant): tool call 1",
            "calls 'get_weather', which the record's 'tools' do not define (none)",
        ),
        (
            chat(("user", "hi"), ("assistant", None, {"tool_calls": [tool_call("c1", "nope", {})]}), tools=[WEATHER]),
            "line 2: message 2 (assistant): tool call 1",
            "calls 'nope', which the record's 'tools' do not define (get_weather)",
        ),
        (
            chat(
                ("user", "hi"),
                ("assistant", None, {"tool_calls": [tool_call("c1", "get_weather", "{city")]}),
                tools=[WEATHER],
            ),
            "line 2: message 2 (assistant): tool call 1",
            "'arguments' is not valid JSON",
        ),
        (
            chat(
                ("user", "hi"),
                ("assistant", None, {"tool_calls": [tool_call("c1", "get_weather", "[1]")]}),
                tools=[WEATHER],
            ),
            "line 2: message 2 (assistant): tool call 1",
            "'arguments' must be a JSON object",
        ),
        (
            chat(
                ("user", "hi"), ("assistant", None, {"tool_calls": [tool_call("", "get_weather", {})]}), tools=[WEATHER]
            ),
            "line 2: message 2 (assistant): tool call 1",
            "needs an 'id'",
        ),
        (
            chat(
                ("user", "hi"),
                (
                    "assistant",
                    None,
                    {"tool_calls": [tool_call("c1", "get_weather", {}), tool_call("c1", "get_weather", {})]},
                ),
                tools=[WEATHER],
            ),
            "line 2: message 2 (assistant)",
            "tool call id 'c1' is used twice",
        ),
        (
            chat(("user", "hi"), ("tool", "42", {"tool_call_id": "c1"}), ("assistant", "x")),
            "line 2: message 2 (tool)",
            "'tool_call_id' must name an earlier assistant tool call still waiting for its result (none)",
        ),
        (
            chat(
                ("user", "hi"),
                ("assistant", None, {"tool_calls": [tool_call("c1", "get_weather", {})]}),
                ("tool", "18C", {"tool_call_id": "c2"}),
                ("assistant", "x"),
                tools=[WEATHER],
            ),
            "line 2: message 3 (tool)",
            "still waiting for its result (c1)",
        ),
        (
            chat(
                ("user", "hi", {"tool_calls": [tool_call("c1", "get_weather", {})]}),
                ("assistant", "x"),
                tools=[WEATHER],
            ),
            "line 2: message 1 (user)",
            "only assistant messages may have 'tool_calls'",
        ),
        (
            chat(("user", "hi"), ("assistant", "x"), tools=[{"type": "function"}]),
            "line 2: tool 1",
            '"type": "function"',
        ),
        (
            chat(("user", "hi"), ("assistant", "x"), tools=[{"type": "function", "function": {"name": "a b"}}]),
            "line 2: tool 1",
            "needs a 'name' of 1 to 64 letters",
        ),
        (chat(("user", "hi"), ("assistant", "x"), tools=[WEATHER, WEATHER]), "line 2: tool 2", "defined twice"),
        (chat(("user", "hi"), ("assistant", "x"), tools={"get_weather": {}}), "line 2", "'tools' must be a list"),
        (
            chat(("user", "hi"), ("assistant", "x"), functions=[{"name": "f"}]),
            "line 2",
            "legacy function calling",
        ),
        (
            chat(("user", "hi"), ("assistant", None, {"function_call": {"name": "f", "arguments": "{}"}})),
            "line 2: message 2",
            "legacy function calling",
        ),
        (chat(("user", "hi"), ("function", "42"), ("assistant", "x")), "line 2: message 2", "legacy function calling"),
        (
            chat(("user", [{"type": "image_url", "image_url": {}}]), ("assistant", "x")),
            "line 2: message 1 (user)",
            "only text content",
        ),
        ({"messages": []}, "line 2", "'messages' must be a non-empty list"),
        ({"messages": ["hi"]}, "line 2: message 1", "expected an object"),
        (chat(*[("user", "q"), ("assistant", "a")] * 129), "line 2", "more than 256 messages in one record"),
    ],
)
def test_it_refuses_a_bad_chat_record_naming_the_line_and_message(row, location, reason):
    error = refusal(jsonl(OK, row))
    assert error.location == location
    assert reason in error.reason


@pytest.mark.parametrize(
    ("row", "location", "reason"),
    [
        ({"conversations": [{"from": "human", "value": "hi"}]}, "line 1", "no assistant turn to learn from"),
        (
            {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": ""}]},
            "line 1: turn 2 (gpt)",
            "empty content",
        ),
        (
            {"conversations": [{"from": "alien", "value": "hi"}, {"from": "gpt", "value": "x"}]},
            "line 1: turn 1",
            "unknown role 'alien'",
        ),
        (
            {"conversations": [{"from": "human", "value": "hi"}, {"from": "function_call", "value": "{}"}]},
            "line 1: turn 2",
            "tool calls are supported in OpenAI chat records only",
        ),
        (
            {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "x", "weight": 0.5}]},
            "line 1: turn 2 (gpt)",
            "weight must be 0 or 1",
        ),
        ({"instruction": "x", "input": "y", "output": ""}, "line 1", "field 'output' is empty"),
        ({"instruction": "", "input": " ", "output": "z"}, "line 1", "'instruction' and 'input' are both empty"),
        ({"instruction": "x", "output": "z", "history": [["a", "b"]]}, "line 1", "'history' is not supported"),
        ({"prompt": "p", "completion": ""}, "line 1", "field 'completion' is empty"),
        ({"prompt": 3, "completion": "c"}, "line 1", "field 'prompt' must be a string"),
        ({"text": "a"}, "line 1", "needs 'messages' (OpenAI chat)"),
        ({"input": "q", "preferred_output": [], "non_preferred_output": []}, "line 1", 'needs "input": {"messages"'),
        (
            {
                "input": {"messages": [{"role": "user", "content": " "}]},
                "preferred_output": [],
                "non_preferred_output": [],
            },
            "line 1: input: message 1 (user)",
            "empty content",
        ),
        (
            {
                "input": {"messages": [{"role": "user", "content": "Hi"}]},
                "preferred_output": [],
                "non_preferred_output": [],
            },
            "line 1: preferred_output",
            "a list of one assistant message",
        ),
        (
            {
                "input": {"messages": [{"role": "user", "content": "Hi"}]},
                "preferred_output": [{"role": "assistant", "content": "Hello"}],
                "non_preferred_output": [{"role": "assistant", "content": "Hello "}],
            },
            "line 1",
            "the preferred and the non-preferred answers are the same",
        ),
        (
            {
                "input": {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]},
                "preferred_output": [{"role": "assistant", "content": "Hello"}],
                "non_preferred_output": [{"role": "assistant", "content": "Go away"}],
            },
            "line 1",
            "the last message must be the user's",
        ),
    ],
)
def test_it_refuses_bad_records_of_the_other_formats(row, location, reason):
    error = refusal(jsonl(row))
    assert error.location == location
    assert reason in error.reason


def test_it_refuses_mixed_formats_in_one_file_naming_both_lines():
    error = refusal(
        jsonl(
            {"text": "a", "label": "x"}, {"text": "b", "label": "y"}, {"instruction": "i", "input": "", "output": "o"}
        )
    )
    assert error.location == "line 3"
    assert error.reason.startswith("this record is Alpaca, but line 1 is text/label: mixed formats in one file")
    error = refusal(json.dumps([OK, {"prompt": "p", "completion": "c"}]).encode(), "t.json")
    assert (error.location, "mixed formats" in error.reason) == ("record 2", True)


@pytest.mark.parametrize(
    ("data", "filename", "location", "reason"),
    [
        (b'{"text": "a", "label": "x"}\n{"text": "b"}\n', "t.jsonl", "line 2", "needs 'messages'"),
        (b'{"text": "a", "label": "x"}\n{oops\n', "t.jsonl", "line 2", "invalid JSON"),
        (b"text,label\na,\n", "t.csv", "line 2", "'label' must be a non-empty string"),
        (b"name,value\na,b\n", "t.csv", "line 1", "header row"),
        (b"[" * 100 + b"]" * 100, "t.json", "file", "nested deeper"),
        (b'{"text": "\xff", "label": "x"}', "t.jsonl", "line 1", "not valid UTF-8"),
    ],
)
def test_a_bad_file_names_the_first_bad_line_and_why(data, filename, location, reason):
    error = refusal(data, filename)
    assert error.location == location
    assert reason in error.reason


def test_a_preference_record_is_its_input_then_the_preferred_answer_with_the_other_kept_aside():
    row = {
        "input": {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital?"}]},
        "preferred_output": [{"role": "assistant", "content": "Paris."}],
        "non_preferred_output": [{"role": "assistant", "content": "It is Paris, a city of many museums."}],
    }

    (record,) = read_records_from_bytes(jsonl(row), "pairs.jsonl")

    assert (record.format, record.task) == ("preference", "generation")
    assert [(m.role, m.content) for m in record.messages] == [
        ("system", "Be brief."),
        ("user", "Capital?"),
        ("assistant", "Paris."),
    ]
    assert (record.text, record.label) == ("Capital?", "Paris.")  # evaluated against the preferred answer
    assert record.rejected.content == "It is Paris, a city of many museums."
