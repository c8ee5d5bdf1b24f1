import pytest

from tests.factories import LABELS, sample_records  # noqa: F401  (the evaluations tests' sample data)
from tests.support.ollama_server import OllamaServer, answer_from_mapping


@pytest.fixture
def ollama_server(settings):
    """The Ollama-speaking test server, with settings.OLLAMA_URL pointing at it and quick retries."""
    server = OllamaServer().start()
    settings.OLLAMA_URL = server.url
    settings.EVALUATION_RETRY_BACKOFF_MS = 5
    yield server
    server.stop()


@pytest.fixture
def make_model(db):
    """``make_model(owner, name="contracts-ft")``: a ready model on the base trained_ollama knows."""
    from functools import partial

    from tests.factories import make_model

    return partial(make_model, name="contracts-ft", base_model="llama3.2:3b")


@pytest.fixture
def trained_ollama(ollama_server):
    """Ollama knowing a base model (always "neutral") and a perfect fine-tune of sample_records()."""
    ollama_server.add_model("llama3.2:3b", answer="neutral")
    ollama_server.add_model("contracts-ft", answer=perfect_answers())
    return ollama_server


def perfect_answers():
    return answer_from_mapping({record["text"]: record["label"] for record in sample_records(200)}, default="neutral")


@pytest.fixture
def best_listed_last(alice, alice_api, make_model, make_test_set, trained_ollama, django_capture_on_commit_callbacks):
    """The reproduction of defect 11: the first fine-tuned name answers like the base, the second is perfect."""
    trained_ollama.add_model("probe-base:latest", answer="neutral")
    trained_ollama.add_model("probe-tuned", answer=perfect_answers())
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_api.post(
            f"/api/v1/models/{make_model(alice).id}/evaluate",
            {
                "test_set_path": make_test_set(alice).path,
                "base_model_name": "llama3.2:3b",
                "fine_tuned_names": ["probe-base:latest", "probe-tuned"],
            },
            format="json",
        )
    from evaluations.models import Evaluation

    evaluation = Evaluation.objects.get(id=response.json()["evaluation_id"])
    assert evaluation.status == "completed", evaluation.error_message
    return evaluation
