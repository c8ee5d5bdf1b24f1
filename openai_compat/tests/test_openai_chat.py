"""Chat completions at /openai/v1/chat/completions: a fine-tuned version answers where it is served.

A version deployed to Ollama answers from its deployment (a real Ollama-speaking server on loopback here); one
that is not deployed answers from its adapter in the local engine where this studio may load models
(standalone), and is otherwise refused with how to deploy it. Nobody chats with what is not theirs.
"""

import json

import pytest

from models_app.models import RegisteredModel
from tests.factories import calling_turn, function_tool, lora_adapter, make_job, tool_call, tool_result
from tests.support.ollama_server import ToolCalls, tool_answer
from trainers.tests.conftest import demo_base  # noqa: F401 - a fixture (the tiny real base), used by name

from .conftest import error_of

pytestmark = pytest.mark.django_db

CHAT = "/openai/v1/chat/completions"
DEPLOYED_AS = "support-bot-v1"
ADAPTER = {
    "lora_adapters/adapter_config.json": json.dumps({"peft_type": "LORA", "r": 4}).encode(),
    "lora_adapters/adapter_model.safetensors": b"weights",
}


@pytest.fixture
def ollama(settings):
    from tests.support.ollama_server import OllamaServer

    server = OllamaServer().start()
    settings.OLLAMA_URL = server.url
    yield server
    server.stop()


def registered_version(owner, *, artifacts=ADAPTER, base_model="demo-base", **fields) -> RegisteredModel:
    from models_app.services import model_create_from_job

    job = make_job(
        owner,
        status="succeeded",
        trainer="external",
        registered_name="support-bot",
        base_model=base_model,
        artifacts=artifacts,
    )
    model = model_create_from_job(job_id=job.id)
    if fields:
        RegisteredModel.objects.filter(id=model.id).update(**fields)
        model.refresh_from_db()
    return model


@pytest.fixture
def deployed(alice, ollama):
    """Alice's support-bot:v1, live in Ollama as support-bot-v1 (answering "Refunds take 5 days.")."""
    ollama.add_model(DEPLOYED_AS, answer="Refunds take 5 days.")
    return registered_version(alice, ollama_name=DEPLOYED_AS)


def ask(client, content="How long do refunds take?", *, model="support-bot:v1", **body):
    return client.post(
        CHAT, {"model": model, "messages": [{"role": "user", "content": content}], **body}, format="json"
    )


def stream_of(response) -> list:
    """The events of an SSE answer, [DONE] last."""
    text = b"".join(response.streaming_content).decode()
    events = [block.removeprefix("data: ") for block in text.split("\n\n") if block]
    return [event if event == "[DONE]" else json.loads(event) for event in events]


# --- served from the deployment ----------------------------------------------------------------------------


def test_a_deployed_version_answers_from_its_ollama_deployment_as_openai_answers(alice_openai, deployed, ollama):
    response = ask(alice_openai, temperature=0, seed=7, max_tokens=50, stop=["\n\n"])

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion"
    assert body["model"] == "support-bot:v1"
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Refunds take 5 days.", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    (sent,) = ollama.chat_requests()
    assert sent.body["model"] == DEPLOYED_AS
    assert sent.body["messages"] == [{"role": "user", "content": "How long do refunds take?"}]
    assert sent.body["options"] == {"temperature": 0.0, "seed": 7, "num_predict": 50, "stop": ["\n\n"]}
    # Ollama's own counts, as OpenAI's usage.
    assert body["usage"]["completion_tokens"] == 4
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + 4
    assert body["studio"]["served_by"] == f"Ollama, deployed as {DEPLOYED_AS}"
    assert body["studio"]["model"] == deployed.id


def test_without_a_temperature_the_answer_is_sampled_as_openais_default_and_capped_by_the_operator(
    alice_openai, deployed, ollama, settings
):
    settings.CHAT_MAX_TOKENS = 300

    assert ask(alice_openai, top_p=0.9).status_code == 200
    too_long = ask(alice_openai, max_completion_tokens=301)

    (sent,) = ollama.chat_requests()
    assert sent.body["options"] == {"temperature": 1.0, "top_p": 0.9, "num_predict": 300}
    assert too_long.status_code == 400
    assert error_of(too_long)["param"] == "max_tokens" and "CHAT_MAX_TOKENS" in error_of(too_long)["message"]


def test_a_streamed_answer_is_openais_chunks_ending_in_done(alice_openai, deployed, ollama):
    response = ask(alice_openai, stream=True, stream_options={"include_usage": True})

    assert response.status_code == 200 and response["Content-Type"] == "text/event-stream"
    *chunks, usage, done = stream_of(response)
    assert done == "[DONE]"
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert len({chunk["id"] for chunk in [*chunks, usage]}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    # Piece by piece as Ollama generates them (its test server: a word at a time).
    pieces = [chunk["choices"][0]["delta"]["content"] for chunk in chunks[1:-1]]
    assert pieces == ["Refunds ", "take ", "5 ", "days."]
    assert [chunk["choices"][0]["finish_reason"] for chunk in chunks] == [None] * 5 + ["stop"]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 4
    assert ollama.chat_requests()[0].body["stream"] is True


def test_a_stream_that_cannot_start_is_a_plain_error_and_one_cut_short_ends_with_an_error_event(
    alice_openai, deployed, ollama
):
    ollama.inject("status", status=404, message="model gone")
    refused = ask(alice_openai, stream=True)
    ollama.clear_faults()
    ollama.inject("cut")
    cut = ask(alice_openai, stream=True)

    assert refused.status_code == 409 and refused["Content-Type"] == "application/json"
    *chunks, error = stream_of(cut)
    assert [chunk["choices"][0]["delta"].get("content") for chunk in chunks] == ["", "Refunds "]
    assert "broke off its answer" in error["error"]["message"]  # and no [DONE]: the SDK raises it


def test_a_conversation_with_tools_gets_the_models_calls_in_openais_shape(alice_openai, deployed, ollama):
    calls = ToolCalls(calls=(("refund_status", {"order": "A-17"}), ("order_lookup", {"order": "A-17"})))
    ollama.add_model(DEPLOYED_AS, answer=tool_answer({"A-17": calls}, default="Done."))
    tools = [function_tool("refund_status", "order"), function_tool("order_lookup", "order")]
    messages = [{"role": "developer", "content": "You are the refunds desk."}, {"role": "user", "content": "A-17?"}]

    both = alice_openai.post(CHAT, {"model": "support-bot:v1", "messages": messages, "tools": tools}, format="json")
    first = alice_openai.post(
        CHAT,
        {"model": "support-bot:v1", "messages": messages, "tools": tools, "parallel_tool_calls": False},
        format="json",
    )

    choice = both.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    assert [(call["type"], call["function"]["name"]) for call in choice["message"]["tool_calls"]] == [
        ("function", "refund_status"),
        ("function", "order_lookup"),
    ]
    assert json.loads(choice["message"]["tool_calls"][0]["function"]["arguments"]) == {"order": "A-17"}
    assert [call["function"]["name"] for call in first.json()["choices"][0]["message"]["tool_calls"]] == [
        "refund_status"
    ]
    sent = ollama.chat_requests()[0].body
    assert sent["messages"][0] == {"role": "system", "content": "You are the refunds desk."}  # developer = system
    assert [tool["function"]["name"] for tool in sent["tools"]] == ["refund_status", "order_lookup"]


def test_the_calls_results_go_back_to_the_model_and_tool_choice_none_hides_the_tools(alice_openai, deployed, ollama):
    messages = [
        {"role": "user", "content": "A-17?"},
        calling_turn(tool_call("call_1", "refund_status", {"order": "A-17"})),
        tool_result("call_1", '{"status": "paid"}'),
    ]
    tools = [function_tool("refund_status", "order")]

    answered = alice_openai.post(CHAT, {"model": "support-bot:v1", "messages": messages, "tools": tools}, format="json")
    hidden = ask(alice_openai, tools=tools, tool_choice="none")

    assert answered.status_code == 200, answered.content
    with_results, without_tools = (request.body for request in ollama.chat_requests())
    assert with_results["messages"][2]["role"] == "tool" and with_results["messages"][2]["tool_name"] == "refund_status"
    assert hidden.status_code == 200 and "tools" not in without_tools


def test_a_json_schema_is_held_by_ollama(alice_openai, deployed, ollama):
    schema = {"type": "object", "properties": {"days": {"type": "integer"}}, "required": ["days"]}
    ollama.add_model(DEPLOYED_AS, answer='{"days": 5}')

    response = ask(
        alice_openai, response_format={"type": "json_schema", "json_schema": {"name": "d", "schema": schema}}
    )

    assert json.loads(response.json()["choices"][0]["message"]["content"]) == {"days": 5}
    assert ollama.chat_requests()[0].body["format"] == schema


# --- what cannot be answered -------------------------------------------------------------------------------


def test_a_version_not_deployed_is_refused_with_how_to_deploy_it_where_web_processes_load_no_models(
    alice, alice_openai, ollama, settings
):
    settings.LOCAL_INFERENCE_SERVES_CHAT = False
    model = registered_version(alice)

    response = ask(alice_openai)

    assert response.status_code == 409
    error = error_of(response)
    assert error["param"] == "model" and error["code"] == "conflict"
    assert "support-bot:v1 is not deployed" in error["message"]
    assert "LOCAL_INFERENCE_SERVES_CHAT is off" in error["message"]
    assert f"POST /api/v1/models/{model.id}/deploy" in error["message"]
    assert ollama.chat_requests() == []


def test_a_deployment_ollama_lost_is_refused_with_deploy_it_again(alice_openai, deployed, ollama):
    ollama.remove_model(DEPLOYED_AS)

    response = ask(alice_openai)

    assert response.status_code == 409
    assert "deployed to Ollama as support-bot-v1, but Ollama does not serve it now" in error_of(response)["message"]
    assert "deploy it again" in error_of(response)["message"]


@pytest.mark.parametrize(
    ("fault", "status", "says"),
    [
        ({"kind": "status", "status": 503, "times": 5}, 503, "kept failing"),
        ({"kind": "drop", "times": 5}, 503, "kept failing"),
        ({"kind": "malformed", "times": 5}, 502, "kept failing"),
        ({"kind": "status", "status": 400, "message": "template error"}, 400, "template error"),
    ],
)
def test_what_ollama_does_wrong_is_a_clear_error_after_one_retry(alice_openai, deployed, ollama, fault, status, says):
    kind = fault.pop("kind")
    ollama.inject(kind, **fault)

    response = ask(alice_openai)

    assert response.status_code == status, response.content
    assert says in error_of(response)["message"] and "endpoint 'ollama'" in error_of(response)["message"]
    assert len(ollama.chat_requests()) == (1 if status == 400 else 2)


def test_nobody_chats_with_anothers_version_but_staff(bob_openai, olivia_openai, deployed, ollama):
    refused = ask(bob_openai)
    unknown = ask(bob_openai, model="no-such-model")

    assert refused.status_code == 404 and unknown.status_code == 404
    assert error_of(refused)["code"] == "model_not_found" and error_of(refused)["param"] == "model"
    assert error_of(refused)["message"] == error_of(unknown)["message"].replace("no-such-model", "support-bot:v1")
    assert ollama.chat_requests() == []
    assert ask(olivia_openai).status_code == 200


def test_chat_completions_need_a_key(anon_api, deployed):
    response = ask(anon_api)

    assert response.status_code == 401 and error_of(response)["code"] == "invalid_api_key"


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        ({"n": 2}, "n", "one choice per request"),
        ({"tool_choice": "required"}, "tool_choice", "cannot force a call"),
        ({"stream_options": {"include_usage": True}}, "stream_options", "only with stream: true"),
        ({"logprobs": True}, "logprobs", "not offered"),
        ({"store": True}, "store", "keeps no completions"),
        ({"top_p": 0}, "top_p", "above 0"),
        ({"temperature": 3}, "temperature", "2"),
        ({"frequency_penalty": 0.5}, "frequency_penalty", "not offered"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
        ({"response_format": {"type": "xml"}}, "response_format", "json_schema"),
        ({"audio": {"voice": "alloy"}}, "audio", "Not offered by the studio's chat completions"),
        ({"messages": []}, "messages", "non-empty list"),
        ({"messages": [{"role": "user", "content": ""}]}, "messages", "message 1 (user): empty content"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            "messages",
            "only text content",
        ),
        (
            {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]},
            "messages",
            "the last message must be the user's",
        ),
        ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "tools", "tool 1"),
    ],
)
def test_what_the_studio_cannot_honour_is_refused_naming_the_parameter(
    alice_openai, deployed, ollama, body, param, says
):
    response = alice_openai.post(
        CHAT, {"model": "support-bot:v1", "messages": [{"role": "user", "content": "Hi"}], **body}, format="json"
    )

    assert response.status_code == 400, response.content
    error = error_of(response)
    assert error["param"] == param and says in error["message"], error
    assert ollama.chat_requests() == []


# --- served by the local engine (a standalone studio) --------------------------------------------------------


@pytest.fixture
def local_version(alice, settings, tmp_path, demo_base):  # noqa: F811 - the fixture imported above
    """Alice's support-bot:v1: a real LoRA adapter on the demo base, trained with a system prompt, not deployed."""
    pytest.importorskip("peft", reason="the training extra (requirements-train.txt) is not installed")
    settings.DEMO_BASE_DIR = demo_base
    settings.LOCAL_INFERENCE_CACHE_DIR = tmp_path / "cache"
    settings.LOCAL_INFERENCE_SERVES_CHAT = True
    folder = tmp_path / "adapter"
    lora_adapter(demo_base, folder, seed=5)
    artifacts = {f"lora_adapters/{path.name}": path.read_bytes() for path in folder.iterdir() if path.is_file()}
    run = {"trainer": "lora-sft", "system_prompt": "Answer with the clause's label."}
    model = registered_version(alice, artifacts=artifacts, training_metrics={"run": run})
    return model, demo_base, folder


def test_a_version_not_deployed_answers_from_its_adapter_in_the_local_engine_as_it_was_trained(
    alice_openai, local_version
):
    from inference.local import LocalEngine, LocalModelRef

    _model, base_folder, adapter = local_version
    question = [{"role": "user", "content": "The supplier shall deliver within 30 days."}]
    trained_with = [{"role": "system", "content": "Answer with the clause's label."}, *question]
    engine = LocalEngine(device="cpu")

    tuned = alice_openai.post(
        CHAT, {"model": "support-bot:v1", "messages": question, "temperature": 0, "max_tokens": 12}, format="json"
    )
    base = alice_openai.post(
        CHAT, {"model": "demo-base", "messages": question, "temperature": 0, "max_tokens": 12}, format="json"
    )

    assert tuned.status_code == 200, tuned.content
    tuned_ref = LocalModelRef(str(base_folder), adapter=str(adapter))
    (expected,) = engine.generate(tuned_ref, [trained_with], max_new_tokens=12)
    (expected_base,) = engine.generate(LocalModelRef(str(base_folder)), [question], max_new_tokens=12)
    body = tuned.json()
    assert body["choices"][0]["message"]["content"] == expected.text
    # The run's system prompt went first, as in every training record that brought none.
    assert body["usage"]["prompt_tokens"] == expected.prompt_tokens
    assert body["usage"]["completion_tokens"] == len(expected.token_ids)
    assert body["studio"]["served_by"] == "the studio's local engine (its adapter on demo-base)"
    assert base.json()["choices"][0]["message"]["content"] == expected_base.text
    streamed = alice_openai.post(
        CHAT,
        {"model": "support-bot:v1", "messages": question, "temperature": 0, "max_tokens": 12, "stream": True},
        format="json",
    )
    *chunks, done = stream_of(streamed)
    assert "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks) == expected.text
    assert base.json()["studio"]["served_by"] == "the studio's local engine (demo-base)"


def test_on_the_local_engine_a_seed_makes_a_sampled_answer_repeatable_and_a_schema_is_refused(
    alice_openai, local_version
):
    def sampled(seed):
        response = ask(alice_openai, temperature=1.5, seed=seed, max_tokens=12)
        assert response.status_code == 200, response.content
        return response.json()["choices"][0]["message"]["content"]

    assert sampled(3) == sampled(3)
    assert len({sampled(seed) for seed in range(4, 9)}) > 1
    schema = ask(alice_openai, response_format={"type": "json_object"})
    assert schema.status_code == 409
    assert "cannot hold an answer to a JSON schema" in error_of(schema)["message"]
