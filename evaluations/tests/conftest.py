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
    mapping = {record["text"]: record["label"] for record in sample_records(200)}
    ollama_server.add_model("contracts-ft", answer=answer_from_mapping(mapping, default="neutral"))
    return ollama_server
