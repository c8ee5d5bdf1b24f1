"""Every chat is counted, per owner, model, day and way in (the OpenAI-compatible API, the model page's Chat):
requests, failures and the tokens the serving engine counted, never what was said. Owners see their own counts
on the model page and at /api/v1/usage/chat; operators see everyone's in the admin."""
# ruff: noqa: F811 - the fixtures imported below are the tests' parameters

import pytest
from django.utils import timezone

from evaluations.models import ChatUsage
from openai_compat.tests.test_openai_chat import deployed, ollama  # noqa: F401 - fixtures, used by name

pytestmark = pytest.mark.django_db


def ask(client, path="/openai/v1/chat/completions", **body):
    if path.endswith("responses"):
        body = {"model": "support-bot:v1", "input": "How long?", **body}
    else:
        body = {"model": "support-bot:v1", "messages": [{"role": "user", "content": "How long?"}], **body}
    return client.post(path, body, format="json")


def test_each_answer_and_failure_is_counted_with_its_tokens_per_way_in(
    alice,
    alice_api,
    alice_browser,
    deployed,
    ollama,
):
    answers = [ask(alice_api).json(), ask(alice_api, path="/openai/v1/responses").json()]
    streamed = ask(alice_api, stream=True)
    b"".join(streamed.streaming_content)
    ollama.inject("status", status=500, message="out of memory")
    failed = ask(alice_api)
    ollama.clear_faults()
    alice_browser.post(f"/models/{deployed.id}/chat/", {"message": "Hi"})
    b"".join(alice_browser.post(f"/models/{deployed.id}/chat/stream/", {"message": "Hi"}).streaming_content)

    assert failed.status_code == 503
    api = ChatUsage.objects.get(source="api")
    page = ChatUsage.objects.get(source="page")
    assert (api.owner, api.model, api.model_name, api.day) == (alice, deployed, "support-bot:v1", timezone.localdate())
    assert (api.requests, api.failures) == (4, 1)
    completion_tokens = answers[0]["usage"]["completion_tokens"] + answers[1]["usage"]["output_tokens"]
    assert api.completion_tokens == completion_tokens + 4  # and the streamed answer's four words
    assert api.prompt_tokens >= answers[0]["usage"]["prompt_tokens"] + answers[1]["usage"]["input_tokens"]
    assert (page.requests, page.failures, page.completion_tokens) == (2, 0, 8)


def test_owners_see_their_counts_on_the_model_page_and_by_day_in_the_api(
    alice,
    bob,
    alice_api,
    alice_browser,
    bob_api,
    deployed,
    ollama,
):
    ask(alice_api)
    ask(alice_api)

    page = alice_browser.get(f"/models/{deployed.id}/").content.decode()
    mine = alice_api.get("/api/v1/usage/chat").json()
    theirs = bob_api.get("/api/v1/usage/chat").json()
    too_far = alice_api.get("/api/v1/usage/chat", {"days": 400})

    assert "2 times · " in page and "tokens in, 8 out" in page
    assert [(row["model_name"], row["source"], row["requests"], row["owner"]) for row in mine] == [
        ("support-bot:v1", "api", 2, "alice")
    ]
    assert mine[0]["day"] == timezone.localdate().isoformat() and mine[0]["model"] == deployed.id
    assert theirs == []
    assert too_far.status_code == 400


def test_a_count_that_cannot_be_written_does_not_fail_the_answer(alice_api, deployed, ollama, monkeypatch):
    from django.db import DatabaseError

    def broken(*args, **kwargs):
        raise DatabaseError("disk full")

    monkeypatch.setattr(ChatUsage.objects, "get_or_create", broken)

    response = ask(alice_api)

    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "Refunds take 5 days."
    assert not ChatUsage.objects.exists()


def test_staff_read_every_count_in_the_admin(admin_client, alice_api, deployed, ollama):
    ask(alice_api)

    listing = admin_client.get("/admin/evaluations/chatusage/")

    assert listing.status_code == 200 and "support-bot:v1" in listing.content.decode()
    assert admin_client.get("/admin/evaluations/chatusage/add/").status_code == 403
