"""The OpenAI-compatible API's clients: each user's studio token sent as OpenAI's SDKs send their key."""

import pytest
from rest_framework.authtoken.models import Token


def bearer(api_client_for, user):
    """A client that authenticates as OpenAI's SDKs do: ``Authorization: Bearer <key>``."""
    client = api_client_for(None)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {Token.objects.get_or_create(user=user)[0].key}")
    return client


@pytest.fixture
def alice_openai(api_client_for, alice):
    return bearer(api_client_for, alice)


@pytest.fixture
def bob_openai(api_client_for, bob):
    return bearer(api_client_for, bob)


@pytest.fixture
def olivia_openai(api_client_for, olivia):
    return bearer(api_client_for, olivia)


def error_of(response) -> dict:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]
