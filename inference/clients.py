"""The one place that builds inference clients: the server's address comes from the operators' settings only.

Callers choose the client's behaviour (timeouts, retries, pool size), never where it connects.
"""

from django.conf import settings

from .ollama import OllamaClient


def ollama_client(*, timeout: float | None = None, **options) -> OllamaClient:
    """A client of OLLAMA_URL; ``timeout`` defaults to OLLAMA_TIMEOUT, ``options`` go to ``OllamaClient``."""
    return OllamaClient(settings.OLLAMA_URL, timeout=settings.OLLAMA_TIMEOUT if timeout is None else timeout, **options)
