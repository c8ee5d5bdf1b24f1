"""OpenAI's Responses API at /openai/v1/responses: ``client.responses.create(model=<fine-tuned model>, …)`` is
answered where the version is served, as the chat completions are, in OpenAI's ``response`` shape or its stream of
typed events. OpenAI's own SDK talks HTTP to a live studio here; what the studio cannot honour is refused by name."""

import json

import pytest

from tests.factories import function_tool
from tests.support.ollama_server import ToolCalls, tool_answer

from .conftest import error_of
from .test_openai_chat import DEPLOYED_AS, deployed, ollama, registered_version  # noqa: F401 - fixtures

openai = pytest.importorskip("openai", reason="the dev requirements (requirements-dev.txt) are not installed")

pytestmark = pytest.mark.django_db

RESPONSES = "/openai/v1/responses"


@pytest.fixture
def client(live_server, alice, deployed):  # noqa: F811 - the fixture imported above
    from rest_framework.authtoken.models import Token

    key = Token.objects.get_or_create(user=alice)[0].key
    return openai.OpenAI(base_url=f"{live_server.url}/openai/v1", api_key=key, max_retries=0, timeout=30)


def test_a_fine_tuned_model_answers_a_response_as_openai_answers(client, ollama):  # noqa: F811
    response = client.responses.create(
        model="support-bot:v1",
        instructions="You are the refunds desk.",
        input="How long do refunds take?",
        temperature=0,
        max_output_tokens=50,
    )

    assert response.output_text == "Refunds take 5 days."
    assert response.status == "completed" and response.id.startswith("resp_") and response.model == "support-bot:v1"
    assert response.instructions == "You are the refunds desk." and response.store is False
    assert response.usage.output_tokens == 4
    assert response.usage.total_tokens == response.usage.input_tokens + 4
    (sent,) = ollama.chat_requests()
    assert sent.body["model"] == DEPLOYED_AS
    assert sent.body["messages"] == [
        {"role": "system", "content": "You are the refunds desk."},
        {"role": "user", "content": "How long do refunds take?"},
    ]
    assert sent.body["options"] == {"temperature": 0.0, "num_predict": 50}


def test_an_answer_cut_at_max_output_tokens_is_an_incomplete_response(client, ollama):  # noqa: F811
    response = client.responses.create(model="support-bot:v1", input="How long?", max_output_tokens=2)

    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == "Refunds take "


def test_a_streamed_response_is_openais_typed_events_the_sdks_helper_accumulates(client, ollama):  # noqa: F811
    events = list(client.responses.create(model="support-bot:v1", input="How long?", stream=True))
    with client.responses.stream(model="support-bot:v1", input="How long?") as stream:
        helper_deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()

    kinds = [event.type for event in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    # Piece by piece as Ollama generates them (its test server: a word at a time).
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert deltas == helper_deltas == ["Refunds ", "take ", "5 ", "days."]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert events[-1].response.output_text == final.output_text == "Refunds take 5 days."
    assert all(request.body["stream"] is True for request in ollama.chat_requests())


def test_a_function_call_comes_back_as_an_output_item_and_its_result_goes_back_as_input(client, ollama):  # noqa: F811
    ollama.add_model(
        DEPLOYED_AS,
        answer=tool_answer(
            {'{"status": "paid"}': "Paid."}, default=ToolCalls(calls=(("refund_status", {"order": "A-17"}),))
        ),
    )
    chat_tool = function_tool("refund_status", "order")["function"]
    tools = [{"type": "function", **chat_tool}]

    first = client.responses.create(model="support-bot:v1", input="Where is A-17's refund?", tools=tools)
    (call,) = first.output
    second = client.responses.create(
        model="support-bot:v1",
        tools=tools,
        input=[
            {"role": "user", "content": "Where is A-17's refund?"},
            call.model_dump(exclude_none=True),  # the previous output, passed back as it came
            {"type": "function_call_output", "call_id": call.call_id, "output": '{"status": "paid"}'},
        ],
    )

    assert call.type == "function_call" and call.name == "refund_status"
    assert json.loads(call.arguments) == {"order": "A-17"}
    assert second.output_text == "Paid."
    sent = ollama.chat_requests()[-1].body
    assert [turn["role"] for turn in sent["messages"]] == ["user", "assistant", "tool"]
    assert sent["messages"][1]["tool_calls"][0]["function"]["name"] == "refund_status"
    assert sent["tools"][0]["function"]["name"] == "refund_status"


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        ({"store": True}, "store", "the studio keeps no responses"),
        ({"previous_response_id": "resp_1"}, "previous_response_id", "send the conversation so far as input"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]}]},
            "input",
            "input[0]: the studio's models read text: a input_image part is not offered",
        ),
        ({"tools": [{"type": "web_search"}]}, "tools", "only function tools are offered, not 'web_search'"),
        ({"max_output_tokens": 100_000}, "max_output_tokens", "CHAT_MAX_TOKENS"),
        ({"tool_choice": "required"}, "tool_choice", "the studio cannot force a call"),
        ({"conversation": "conv_1"}, "conversation", "Not offered by the studio's responses"),
    ],
)
def test_what_the_studio_cannot_honour_is_refused_naming_the_parameter(
    alice_openai,
    deployed,  # noqa: F811
    ollama,  # noqa: F811
    body,
    param,
    says,
):
    response = alice_openai.post(RESPONSES, {"model": "support-bot:v1", "input": "Hi", **body}, format="json")

    assert response.status_code == 400, response.content
    assert error_of(response)["param"] == param and says in error_of(response)["message"]
    assert ollama.chat_requests() == []


def test_a_stream_cut_short_ends_with_an_error_event_and_nobody_asks_anothers_version(
    alice_openai,
    bob_openai,
    deployed,  # noqa: F811
    ollama,  # noqa: F811
):
    ollama.inject("cut")
    cut = alice_openai.post(RESPONSES, {"model": "support-bot:v1", "input": "Hi", "stream": True}, format="json")
    bobs = bob_openai.post(RESPONSES, {"model": "support-bot:v1", "input": "Hi"}, format="json")

    blocks = [block for block in b"".join(cut.streaming_content).decode().split("\n\n") if block]
    events = [json.loads(block.split("data: ", 1)[1]) for block in blocks]
    assert [event["type"] for event in events][-2:] == ["response.output_text.delta", "error"]
    assert "broke off its answer" in events[-1]["message"]
    assert blocks[-1].startswith("event: error\n")
    assert bobs.status_code == 404 and error_of(bobs)["code"] == "model_not_found"


@pytest.mark.parametrize(
    "body",
    [
        {"input": None},
        {"input": 7},
        {"input": []},
        {"input": [7]},
        {"input": [{"type": "message", "role": "user"}]},
        {"input": [{"role": "robot", "content": "Hi"}]},
        {"input": [{"role": "user", "content": [{"type": "input_text"}]}]},
        {"input": [{"type": "function_call_output", "output": "x"}]},
        {"text": "json"},
        {"text": {"format": "json"}},
        {"text": {"format": {"type": "xml"}}},
        {"tools": {"type": "function"}},
        {"tools": [7]},
        {"temperature": "hot"},
        {"top_p": [1]},
        {"metadata": {"a": {"b": 1}}},
        {"max_output_tokens": -1},
    ],
)
def test_a_malformed_request_is_a_400_naming_what_is_wrong_never_a_500(alice_openai, body):
    response = alice_openai.post(RESPONSES, {"model": "support-bot:v1", "input": "Hi", **body}, format="json")

    assert response.status_code == 400, response.content
    assert error_of(response)["param"] and error_of(response)["message"]
