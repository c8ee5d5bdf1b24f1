"""Tool-calling test sets, evaluated on an OpenAI-compatible server and on Ollama: each is sent the tools and the
history turns in its own API's shape, and an answer's calls are scored against the reference's calls."""

import json

import pytest

from evaluations.models import Evaluation, Prediction
from finetune_studio.records import tool_calls_text
from inference.endpoints import parse_endpoint_settings
from tests.factories import calling_turn, function_tool, tool_call, tool_result
from tests.support.ollama_server import ToolCalls, tool_answer
from tests.support.openai_server import OpenAIServer

pytestmark = pytest.mark.django_db

WEATHER = function_tool("get_weather", "city", description="The weather now in a city")
TIME = function_tool("get_time", "city", description="The local time in a city")
TOOLS = [WEATHER, TIME]
PARIS_HISTORY = [
    {"role": "user", "content": "Weather in Paris?"},
    calling_turn(tool_call("c1", "get_weather", {"city": "Paris"})),
    tool_result("c1", "Paris: 18C", name="get_weather"),
    {"role": "assistant", "content": "It is 18C in Paris."},
]


def call_turn(name: str, city: str) -> dict:
    return calling_turn(tool_call("x", name, {"city": city}))


# Index 0 and 1: one question, answered by a call; 2: the same after a whole exchange (the history); 3: a tool
# result answered in text.
RECORDS = [
    {
        "tools": TOOLS,
        "messages": [{"role": "user", "content": "Weather in Berlin?"}, call_turn("get_weather", "Berlin")],
    },
    {
        "tools": TOOLS,
        "messages": [{"role": "user", "content": "Weather in Madrid?"}, call_turn("get_weather", "Madrid")],
    },
    {
        "tools": TOOLS,
        "messages": [
            *PARIS_HISTORY,
            {"role": "user", "content": "What time is it in Dublin?"},
            call_turn("get_time", "Dublin"),
        ],
    },
    {
        "tools": TOOLS,
        "messages": [
            {"role": "user", "content": "Weather in Rome?"},
            call_turn("get_weather", "Rome"),
            {"role": "tool", "tool_call_id": "x", "content": "Rome: 25C"},
            {"role": "assistant", "content": "It is 25C in Rome."},
        ],
    },
]


def calls(*pairs) -> ToolCalls:
    return ToolCalls(tuple(pairs))


# Right calls, right arguments, and the text answer word for word.
FINE_TUNED = tool_answer(
    {
        "Weather in Berlin?": calls(("get_weather", {"city": "Berlin"})),
        "Weather in Madrid?": calls(("get_weather", {"city": "Madrid"})),
        "What time is it in Dublin?": calls(("get_time", {"city": "Dublin"})),
        "Rome: 25C": "It is 25C in Rome.",
    }
)
# The right function with an argument differing only in case (the same words after text normalisation), the
# right function with another city, plain text where a call was expected, and the text answer right again.
BASE = tool_answer(
    {
        "Weather in Berlin?": calls(("get_weather", {"city": "berlin"})),
        "Weather in Madrid?": calls(("get_weather", {"city": "Barcelona"})),
        "What time is it in Dublin?": "It is noon in Dublin.",
        "Rome: 25C": "It is 25C in Rome.",
    }
)


@pytest.fixture
def openai_endpoint(settings):
    server = OpenAIServer().start()
    server.add_model("base", answer=BASE)
    server.add_model("tools-ft", answer=FINE_TUNED)
    settings.INFERENCE_ENDPOINTS = parse_endpoint_settings(
        json.dumps([{"name": "vllm", "kind": "openai", "url": server.url}])
    )
    settings.EVALUATION_RETRY_BACKOFF_MS = 5
    yield server
    server.stop()


@pytest.fixture
def evaluate_tools(alice, alice_api, make_model, make_test_set, django_capture_on_commit_callbacks):
    def run(*, endpoint: str, base: str = "base", fine_tuned: str = "tools-ft", records=RECORDS) -> Evaluation:
        body = {
            "test_set_path": make_test_set(alice, records).path,
            "base_model_name": base,
            "fine_tuned_names": [fine_tuned],
            "endpoint": endpoint,
        }  # no task: the test set's (a chat set's: generation) decides
        with django_capture_on_commit_callbacks(execute=True):
            response = alice_api.post(f"/api/v1/models/{make_model(alice).id}/evaluate", body, format="json")
        assert response.status_code == 202, response.content
        evaluation = Evaluation.objects.get(id=response.json()["evaluation_id"])
        assert evaluation.status == "completed", evaluation.error_message
        return evaluation

    return run


def scores(evaluation, candidate: str) -> list[dict]:
    rows = Prediction.objects.filter(evaluation=evaluation, candidate=candidate).order_by("index")
    return [row.scores for row in rows]


def assert_scored_as_calls(evaluation, *, base: str = "base", fine_tuned: str = "tools-ft") -> None:
    assert evaluation.results["task"] == "generation"
    assert [s["exact_match"] for s in scores(evaluation, fine_tuned)] == [1.0, 1.0, 1.0, 1.0]
    base_scores = scores(evaluation, base)
    # Case differs only: same tokens, not the same arguments. Another city, plain text for a call: wrong.
    assert base_scores[0]["exact_match"] == 0.0 and base_scores[0]["token_f1"] == 1.0
    assert [s["exact_match"] for s in base_scores[1:]] == [0.0, 0.0, 1.0]  # the text answer is scored as text
    berlin = Prediction.objects.get(evaluation=evaluation, candidate=fine_tuned, index=0)
    assert berlin.expected == tool_calls_text([("get_weather", {"city": "Berlin"})]) == berlin.prediction_text
    assert berlin.input_text == "Weather in Berlin?"
    assert Prediction.objects.get(evaluation=evaluation, candidate=fine_tuned, index=3).expected == "It is 25C in Rome."
    assert evaluation.results["fine_tuned"]["exact_match"] == 1.0
    assert evaluation.results["base"]["exact_match"] == 0.25
    # Three of the four answers are calls: the verdict is on the calls, not on the overlap of their JSON.
    assert evaluation.results["headline_metric"] == evaluation.results["significance"]["metric"] == "exact_match"


def test_an_openai_compatible_server_gets_the_tools_and_the_history_in_openais_shape(openai_endpoint, evaluate_tools):
    evaluation = evaluate_tools(endpoint="vllm")
    assert_scored_as_calls(evaluation)
    sent = [request.body for request in openai_endpoint.chat_requests(model="tools-ft")]
    assert all(body["tools"] == TOOLS for body in sent)
    (dublin,) = [body["messages"] for body in sent if "Dublin" in json.dumps(body)]
    assert dublin == [*PARIS_HISTORY, {"role": "user", "content": "What time is it in Dublin?"}]
    assert "get_time" not in json.dumps(dublin)  # the reference call is never shown


def test_ollama_gets_the_tools_and_the_history_in_its_own_shape(ollama_server, evaluate_tools):
    ollama_server.add_model("base", answer=BASE)
    ollama_server.add_model("tools-ft", answer=FINE_TUNED)
    evaluation = evaluate_tools(endpoint="ollama")
    assert_scored_as_calls(evaluation)
    sent = [request.body for request in ollama_server.chat_requests(model="tools-ft")]
    assert all(body["tools"] == TOOLS for body in sent)
    (dublin,) = [body["messages"] for body in sent if "Dublin" in json.dumps(body)]
    assert dublin == [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": "Paris: 18C", "tool_name": "get_weather"},
        {"role": "assistant", "content": "It is 18C in Paris."},
        {"role": "user", "content": "What time is it in Dublin?"},
    ]


def test_calls_with_malformed_arguments_score_zero_and_keep_what_the_model_wrote(openai_endpoint, evaluate_tools):
    openai_endpoint.add_model("broken", answer=calls(("get_weather", '{"city": "Berl')))
    evaluation = evaluate_tools(endpoint="vllm", fine_tuned="broken", records=RECORDS[:1])
    (broken,) = Prediction.objects.filter(evaluation=evaluation, candidate="broken")
    assert broken.scores["exact_match"] == 0.0 and broken.error == ""
    assert json.loads(broken.prediction_text) == [{"arguments": '{"city": "Berl', "name": "get_weather"}]


def test_the_same_calls_in_another_order_and_equal_numbers_match(openai_endpoint, evaluate_tools):
    both = {
        "tools": TOOLS,
        "messages": [
            {"role": "user", "content": "Weather and time in Oslo?"},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "a",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Oslo", "days": 1}'},
                    },
                    {"id": "b", "type": "function", "function": {"name": "get_time", "arguments": '{"city": "Oslo"}'}},
                ],
            },
        ],
    }
    openai_endpoint.add_model(
        "reordered", answer=calls(("get_time", {"city": "Oslo"}), ("get_weather", {"days": 1.0, "city": "Oslo"}))
    )
    openai_endpoint.add_model("one-call", answer=calls(("get_time", {"city": "Oslo"})))
    evaluation = evaluate_tools(endpoint="vllm", base="one-call", fine_tuned="reordered", records=[both])
    assert scores(evaluation, "reordered")[0]["exact_match"] == 1.0
    assert scores(evaluation, "one-call")[0]["exact_match"] == 0.0


def test_a_test_set_answered_mostly_in_text_keeps_token_f1_as_its_headline(openai_endpoint, evaluate_tools):
    evaluation = evaluate_tools(endpoint="vllm", records=[RECORDS[0], RECORDS[3], RECORDS[3]])
    assert evaluation.results["headline_metric"] == "token_f1"


def test_the_list_and_the_dashboard_give_the_figure_the_verdict_was_read_from(
    openai_endpoint, evaluate_tools, alice_browser
):
    evaluation = evaluate_tools(endpoint="vllm")
    assert evaluation.model.eval_results["headline_metric"] == "exact_match"
    # Exact match went from 0.25 to 1.0: the lists show that, not the token F1 of the calls' JSON.
    listed = alice_browser.get("/evaluations/").content.decode()
    assert '+75.0 pts <span class="hint">exact match</span>' in listed
    dashboard = alice_browser.get("/").content.decode()
    assert '+75.0 pts</span> <span class="hint">exact match</span>' in dashboard  # the model's row
    assert 'exact match <span class="delta up">+75.0 pts</span>' in dashboard  # the recent evaluation
