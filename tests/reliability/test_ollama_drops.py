"""Ollama dropping connections mid-evaluation: retried, then a clear failure that keeps what was stored."""

import json
import threading
import time

import pytest

from evaluations.models import Evaluation, Prediction
from evaluations.tests.test_api import evaluate

pytestmark = pytest.mark.django_db

EXAMPLES = 12  # sample_records(): 12 examples × 2 candidates = 24 answers


def _drop_everything_after(server, requests_seen: int) -> threading.Thread:
    """From the ``requests_seen``-th chat request on, Ollama drops every connection (it crashed mid-run)."""

    def watch():
        deadline = time.monotonic() + 20
        while len(server.chat_requests()) < requests_seen and time.monotonic() < deadline:
            time.sleep(0.005)
        server.inject("drop")

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_ollama_dropping_connections_fails_clearly_keeps_partial_results_and_a_retry_skips_them(
    alice, alice_api, make_model, make_test_set, trained_ollama, settings, django_capture_on_commit_callbacks
):
    settings.EVALUATION_MAX_RETRIES = 2
    trained_ollama.latency = 0.03
    trained_ollama.inject("drop", times=2)  # transient: retried, the run goes on
    watcher = _drop_everything_after(trained_ollama, requests_seen=12)
    with django_capture_on_commit_callbacks(execute=True):
        response = evaluate(alice_api, make_model(alice), make_test_set(alice), concurrency=2)
    assert response.status_code == 202, response.content
    watcher.join(timeout=5)
    evaluation = Evaluation.objects.get(id=response.json()["evaluation_id"])

    assert evaluation.status == "failed"
    # Says what happened and that it was retried (1 + EVALUATION_MAX_RETRIES attempts), not a bare "failed".
    assert f"endpoint 'ollama' ({trained_ollama.url}) kept failing" in evaluation.error_message, (
        evaluation.error_message
    )
    assert "connection closed without an answer; 3 attempts" in evaluation.error_message
    kept = {(p.index, p.candidate) for p in Prediction.objects.filter(evaluation=evaluation)}
    assert 0 < len(kept) < EXAMPLES * 2  # partial results are kept, not thrown away with the failure
    assert Evaluation.objects.get(id=evaluation.id).progress["done"] == len(kept)
    asked_in_first_run = len(trained_ollama.chat_requests())

    # Ollama is back; the owner retries. Only what is missing is asked.
    trained_ollama.clear_faults()
    with django_capture_on_commit_callbacks(execute=True):
        retried = alice_api.post(f"/api/v1/evaluations/{evaluation.id}/retry")
    assert retried.status_code == 202, retried.content
    evaluation.refresh_from_db()
    assert evaluation.status == "completed", evaluation.error_message
    assert evaluation.error_message == ""
    assert Prediction.objects.filter(evaluation=evaluation).count() == EXAMPLES * 2
    asked_again = trained_ollama.chat_requests()[asked_in_first_run:]
    assert len(asked_again) == EXAMPLES * 2 - len(kept)
    texts = {p.index: p.input_text for p in Prediction.objects.filter(evaluation=evaluation)}
    for request in asked_again:
        assert not any(
            request.model.startswith(candidate.split(":")[0]) and texts[index] in request.prompt
            for index, candidate in kept
        ), "a stored (example, candidate) was asked again"
    assert evaluation.results["fine_tuned"]["accuracy"] == 1.0
    # A finished evaluation cannot be retried.
    assert alice_api.post(f"/api/v1/evaluations/{evaluation.id}/retry").status_code == 409
    print(
        "FAULTS",
        json.dumps(
            {
                "scenario": "ollama dropping connections mid-evaluation",
                "requests_first_run": asked_in_first_run,
                "predictions_kept": len(kept),
                "requests_on_retry": len(asked_again),
                "asked_twice_once_stored": 0,
                "rows_lost": 0,
            }
        ),
    )
