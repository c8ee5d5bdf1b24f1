"""Tool calls in the built-in engine's answers (the Hermes ``<tool_call>`` convention) and in each API's turns."""

import pytest

from finetune_studio.records import ToolCall
from inference.tool_calls import ollama_turns, parse_tool_call_blocks, parse_tool_calls, template_turns
from tests.factories import calling_turn, tool_call, tool_result

HISTORY = [
    {"role": "user", "content": "Weather in Paris?"},
    calling_turn(tool_call("c1", "get_weather", {"city": "Paris"})),
    tool_result("c1", "18C", name="get_weather"),
]


def test_a_well_formed_block_is_a_call_and_leaves_the_content():
    text = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    assert parse_tool_call_blocks(text) == ("", (ToolCall("call_0", "get_weather", '{"city": "Paris"}'),))


def test_several_blocks_are_several_calls_in_the_order_written_and_the_text_around_them_stays():
    text = (
        "Let me look both up.\n"
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>\n'
        '<tool_call>\n  {"name": "get_time", "arguments": {"city": "Oslo"}}  \n\n</tool_call>'
    )
    content, calls = parse_tool_call_blocks(text)
    assert content == "Let me look both up."
    assert [(call.id, call.name, call.arguments_object()) for call in calls] == [
        ("call_0", "get_weather", {"city": "Oslo"}),
        ("call_1", "get_time", {"city": "Oslo"}),
    ]


def test_whitespace_inside_and_around_the_tags_is_tolerated():
    text = '\t<tool_call>   {"name":"f","arguments":{}}\r\n</tool_call>  '
    assert parse_tool_call_blocks(text) == ("", (ToolCall("call_0", "f", "{}"),))


def test_a_block_that_is_not_a_call_stays_in_the_content():
    broken = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par\n</tool_call>'
    assert parse_tool_call_blocks(broken) == (broken, ())
    nameless = '<tool_call>{"arguments": {"city": "Paris"}}</tool_call>'
    assert parse_tool_call_blocks(nameless) == (nameless, ())
    assert parse_tool_call_blocks("no calls here") == ("no calls here", ())


def test_a_broken_or_unclosed_block_does_not_hide_a_good_one_after_it():
    text = '<tool_call>{"name": oops</tool_call> <tool_call>{"name": "f", "arguments": {"a": 1}'
    text += '<tool_call>{"name": "g", "arguments": {"b": 2}}</tool_call>'
    content, calls = parse_tool_call_blocks(text)
    assert [(call.name, call.arguments_object()) for call in calls] == [("g", {"b": 2})]
    assert content == '<tool_call>{"name": oops</tool_call> <tool_call>{"name": "f", "arguments": {"a": 1}'


def test_arguments_written_as_text_are_kept_as_written():
    (call,) = parse_tool_call_blocks('<tool_call>{"name": "f", "arguments": "{\\"a\\": 1"}</tool_call>')[1]
    assert call.arguments == '{"a": 1'  # not JSON: scored wrong, not repaired


def test_chat_templates_get_arguments_as_objects_and_text_content():
    turns = template_turns(HISTORY)
    assert turns[1]["content"] == ""
    assert turns[1]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": {"city": "Paris"}}
    assert turns[2] == HISTORY[2]
    assert HISTORY[1]["tool_calls"][0]["function"]["arguments"] == '{"city": "Paris"}'  # the request is unchanged


def test_ollama_gets_arguments_as_objects_and_tool_results_named_by_their_function():
    assert ollama_turns(HISTORY) == [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": "18C", "tool_name": "get_weather"},
    ]


OFFERED = ["get_weather", "get_time"]


def test_hermes_blocks_are_read_first():
    text = '<tool_call>{"name": "get_time", "arguments": {"city": "Oslo"}}</tool_call>'
    assert parse_tool_calls(text, tool_names=OFFERED) == ("", (ToolCall("call_0", "get_time", '{"city": "Oslo"}'),))


def test_a_whole_answer_in_llamas_json_convention_is_a_call():
    text = '{"name": "get_weather", "parameters": {"city": "Paris"}}'
    assert parse_tool_calls(text, tool_names=OFFERED) == ("", (ToolCall("call_0", "get_weather", '{"city": "Paris"}'),))


@pytest.mark.parametrize(
    "text",
    [
        '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Rome"}}; {"name": "get_time"}\n',
        '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Rome"}}, {"name": "get_time", "arguments": {}}]',
        '[{"name": "get_weather", "arguments": {"city": "Rome"}}, {"name": "get_time", "arguments": {}}]',
        '[TOOL_CALLS]get_weather[ARGS]{"city": "Rome"}[TOOL_CALLS]get_time[ARGS]{}',
        '[get_weather(city="Rome"), get_time()]',
        '<|python_tag|>[get_weather(city="Rome"), get_time()]',
    ],
    ids=["llama json tagged", "mistral", "mistral marker dropped", "mistral args", "llama 3.2 python", "python tagged"],
)
def test_two_calls_written_in_each_whole_answer_convention_are_read_in_order(text):
    content, calls = parse_tool_calls(text, tool_names=OFFERED)

    assert content == ""
    assert [(call.id, call.name, call.arguments_object()) for call in calls] == [
        ("call_0", "get_weather", {"city": "Rome"}),
        ("call_1", "get_time", {}),
    ]


@pytest.mark.parametrize(
    "text",
    [
        '[TOOL_CALLS][{"name": "delete_everything", "arguments": {}}]',  # not offered
        '[{"name": "get_weather", "arguments": {"city": "Rome"}, "extra": 1}]',  # not the convention's keys
        "[1, 2, 3]",
        '[TOOL_CALLS]get_weather[ARGS]{"city": "Ro',  # cut off
        "[TOOL_CALLS]delete_everything[ARGS]{}",
        '[get_weather(city=open("/etc/passwd").read())]',  # never evaluated: not a literal
        '[get_weather("Rome")]',  # positional arguments are not the convention
        "[get_weather(city={1, 2})]",  # a set has no JSON form
        "[delete_everything()]",
        "[see the weather (below)]",
    ],
)
def test_what_only_looks_like_those_conventions_stays_text(text):
    assert parse_tool_calls(text, tool_names=OFFERED) == (text, ())


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "delete_everything", "parameters": {}}',  # a function that was not offered
        '{"name": "get_weather", "parameters": {"city": "Paris"}} and then some words',
        '{"name": "get_weather", "parameters": {"city": "Par',  # cut off
        '{"name": "get_weather", "city": "Paris"}',  # not the convention's keys
        '"get_weather"',
        "It is sunny.",
    ],
)
def test_anything_else_stays_text(text):
    assert parse_tool_calls(text, tool_names=OFFERED) == (text, ())
