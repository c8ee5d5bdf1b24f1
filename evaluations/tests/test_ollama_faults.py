"""Every Ollama fault goes through the real test server, and through the real service."""

import pytest

from evaluations import services
from evaluations.models import Evaluation

from .test_api import evaluate


@pytest.fixture
def start(alice, alice_api, make_model, make_test_set, django_capture_on_commit_callbacks):
    """Start an evaluation of 4 examples (8 answers) and run it; returns the finished evaluation."""

    def run(**extra):
        dataset = make_test_set(alice)
        with django_capture_on_commit_callbacks(execute=True):
            response = evaluate(alice_api, make_model(alice), dataset, max_examples=4, concurrency=2, **extra)
        assert response.status_code == 202, response.content
        return Evaluation.objects.get(id=response.json()["evaluation_id"])

    return run


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_it_retries_transient_http_errors_then_completes(status, start, trained_ollama):
    trained_ollama.inject("status", status=status, times=3, model="contracts-ft")
    evaluation = start()
    assert evaluation.status == "completed", evaluation.error_message
    assert evaluation.results["fine_tuned"]["accuracy"] == 1.0
    assert len(trained_ollama.chat_requests(model="contracts-ft")) == 4 + 3


@pytest.mark.parametrize("kind", ["malformed", "drop"])
def test_it_retries_malformed_answers_and_dropped_connections(kind, start, trained_ollama):
    trained_ollama.inject(kind, times=2)
    evaluation = start()
    assert evaluation.status == "completed", evaluation.error_message
    assert len(trained_ollama.chat_requests()) == 8 + 2


def test_it_retries_a_request_that_times_out(start, trained_ollama):
    trained_ollama.inject("timeout", delay=2.0, times=1, model="llama3.2:3b")
    evaluation = start(timeout=1)
    assert evaluation.status == "completed", evaluation.error_message
    assert len(trained_ollama.chat_requests(model="llama3.2:3b")) == 5


def test_it_fails_with_the_reason_when_errors_persist(start, trained_ollama, settings):
    settings.EVALUATION_MAX_RETRIES = 2
    trained_ollama.inject("status", status=503, model="contracts-ft", message="server busy")
    evaluation = start()
    assert evaluation.status == "failed"
    assert "kept failing for model 'contracts-ft'" in evaluation.error_message
    assert "HTTP 503: server busy" in evaluation.error_message
    # Each failing request was tried 1 + 2 times, never forever.
    assert len(trained_ollama.chat_requests(model="contracts-ft")) <= 4 * 3


def test_a_missing_model_fails_at_once_with_the_exact_message(start, ollama_server):
    ollama_server.add_model("llama3.2:3b", answer="neutral")
    evaluation = start()
    assert evaluation.status == "failed"
    # The endpoint, its address and the model, in the inference taxonomy's words.
    assert evaluation.error_message.startswith(
        f"model 'contracts-ft' not found on endpoint 'ollama' ({ollama_server.url})"
    ), evaluation.error_message
    # 404 is not retried: one request per example at most, none repeated.
    asked = ollama_server.chat_requests(model="contracts-ft")
    assert len(asked) == len({request.prompt for request in asked}) <= 4


def test_an_unreachable_ollama_fails_saying_so(start, settings):
    from tests.support.processes import free_port

    settings.OLLAMA_URL = f"http://127.0.0.1:{free_port()}"
    settings.EVALUATION_RETRY_BACKOFF_MS = 5
    evaluation = start()
    assert evaluation.status == "failed"
    assert evaluation.error_message.startswith(f"endpoint 'ollama' ({settings.OLLAMA_URL}) kept failing")
    assert "connection refused" in evaluation.error_message


def test_free_text_answers_are_parsed_and_unparseable_ones_count_wrong(start, ollama_server):
    from tests.support.ollama_server import RawAnswer

    ollama_server.add_model("llama3.2:3b", answer=lambda model, prompt: RawAnswer("I think it is POSITIVE."))
    ollama_server.add_model("contracts-ft", answer=lambda model, prompt: RawAnswer("I cannot tell."))
    evaluation = start()
    assert evaluation.status == "completed", evaluation.error_message
    base, fine_tuned = evaluation.results["base"], evaluation.results["fine_tuned"]
    assert base["unparseable"] == 0 and base["correct"] == 2  # examples 0 and 3 are positive
    assert fine_tuned["unparseable"] == 4 and fine_tuned["accuracy"] == 0.0
    assert fine_tuned["confusion_matrix"]["columns"][-1] == "unparseable"
    # Rows follow the sorted labels (negative, neutral, positive); examples 0-3: positive, negative, neutral, positive.
    assert [row[-1] for row in fine_tuned["confusion_matrix"]["matrix"]] == [1, 1, 2]


@pytest.mark.django_db(transaction=True)
def test_cancelling_stops_the_run_between_requests(
    alice, alice_api, make_model, make_test_set, trained_ollama, tasks_not_run
):
    import threading
    import time

    from django.db import connection

    response = evaluate(alice_api, make_model(alice), make_test_set(alice), concurrency=1)
    evaluation = Evaluation.objects.get(id=response.json()["evaluation_id"])
    trained_ollama.latency = 0.1  # 24 answers one at a time: about 2.4 s of work

    def work():
        try:
            services.evaluation_execute(evaluation_id=evaluation.id)
        finally:
            connection.close()

    worker = threading.Thread(target=work)
    worker.start()
    deadline = time.monotonic() + 20
    while not evaluation.predictions.exists():  # the first answers are stored: cancel now
        assert time.monotonic() < deadline, "no prediction was stored"
        time.sleep(0.02)
    services.evaluation_cancel(evaluation=Evaluation.objects.get(id=evaluation.id))
    worker.join(30)
    evaluation.refresh_from_db()
    assert evaluation.status == "cancelled"
    asked = len(trained_ollama.chat_requests())
    assert 0 < asked < 24
    # Whatever was answered before the cancel is kept; nothing after it was asked.
    assert evaluation.predictions.count() <= asked
