from evaluations.tests.conftest import make_model, ollama_server, trained_ollama  # noqa: F401
from tests.security.conftest import world  # noqa: F401  (the same fixture, shared)
