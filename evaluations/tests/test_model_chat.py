"""The model page's Chat: a conversation with the version where it is served, kept in the page, never stored."""

import html
import json

import pytest

from tests.factories import make_model

pytestmark = pytest.mark.django_db

ADAPTER = {
    "lora_adapters/adapter_config.json": json.dumps({"peft_type": "LORA", "r": 4}).encode(),
    "lora_adapters/adapter_model.safetensors": b"weights",
}


@pytest.fixture
def deployed(alice, ollama_server):
    ollama_server.add_model("contracts-v1", answer="termination")
    return make_model(alice, name="contracts", base_model="demo-base", files=ADAPTER, ollama_name="contracts-v1")


def history_of(response) -> list:
    page = response.content.decode()
    start = page.index('name="history" value="') + len('name="history" value="')
    return json.loads(html.unescape(page[start : page.index('"', start)]))


def test_the_model_page_links_to_its_chat_which_says_what_answers(alice_browser, deployed):
    model_page = alice_browser.get(f"/models/{deployed.id}/").content.decode()
    chat = alice_browser.get(f"/models/{deployed.id}/chat/")

    assert f'href="/models/{deployed.id}/chat/"' in model_page
    assert chat.status_code == 200
    assert "Answers from Ollama, deployed as contracts-v1." in chat.content.decode()


def test_a_conversation_goes_on_with_what_was_said_and_the_system_prompt(alice_browser, deployed, ollama_server):
    first = alice_browser.post(
        f"/models/{deployed.id}/chat/",
        {"message": "Either party may end this.", "system": "Label the clause.", "temperature": "0", "max_tokens": "8"},
    )
    second = alice_browser.post(
        f"/models/{deployed.id}/chat/",
        {"message": "And this one?", "history": json.dumps(history_of(first)), "temperature": "0.5", "max_tokens": "8"},
    )

    assert first.status_code == 200 and "termination" in first.content.decode()
    assert history_of(second) == [
        {"role": "user", "content": "Either party may end this."},
        {"role": "assistant", "content": "termination"},
        {"role": "user", "content": "And this one?"},
        {"role": "assistant", "content": "termination"},
    ]
    asked_first, asked_second = (request.body for request in ollama_server.chat_requests())
    assert asked_first["messages"][0] == {"role": "system", "content": "Label the clause."}
    assert asked_first["options"] == {"temperature": 0.0, "num_predict": 8}
    assert [turn["content"] for turn in asked_second["messages"]] == [
        "Either party may end this.",
        "termination",
        "And this one?",
    ]


def test_what_cannot_be_asked_is_shown_and_the_message_is_kept(alice_browser, deployed, ollama_server):
    bad = alice_browser.post(
        f"/models/{deployed.id}/chat/", {"message": "Keep me", "temperature": "7", "max_tokens": "8"}
    )
    broken = alice_browser.post(f"/models/{deployed.id}/chat/", {"message": "Hi", "history": "[{", "max_tokens": "8"})
    ollama_server.inject("status", status=400, message="the template failed")
    refused = alice_browser.post(f"/models/{deployed.id}/chat/", {"message": "Keep me too", "max_tokens": "8"})

    assert bad.status_code == 400
    assert 'data-error-field="temperature"' in bad.content.decode() and ">Keep me</textarea>" in bad.content.decode()
    assert broken.status_code == 400 and "start a new one" in broken.content.decode()
    assert refused.status_code == 200 and "the template failed" in refused.content.decode()
    assert ">Keep me too</textarea>" in refused.content.decode()
    assert len(ollama_server.chat_requests()) == 1


def test_a_version_nothing_serves_says_how_to_deploy_it(alice, alice_browser, settings):
    settings.LOCAL_INFERENCE_SERVES_CHAT = False
    model = make_model(alice, name="contracts", base_model="demo-base", files=ADAPTER)

    page = alice_browser.get(f"/models/{model.id}/chat/").content.decode()

    assert "contracts is not deployed" in page and f"POST /api/v1/models/{model.id}/deploy" in page
    assert 'name="message"' not in page


def test_bob_cannot_chat_with_alices_model(client, bob, deployed, ollama_server):
    client.force_login(bob)

    assert client.get(f"/models/{deployed.id}/chat/").status_code == 404
    assert client.post(f"/models/{deployed.id}/chat/", {"message": "Hi", "max_tokens": "8"}).status_code == 404
    assert client.post(f"/models/{deployed.id}/chat/stream/", {"message": "Hi"}).status_code == 404
    assert ollama_server.chat_requests() == []


def stream_lines(response) -> list[dict]:
    return [json.loads(line) for line in b"".join(response.streaming_content).splitlines()]


def test_the_page_script_gets_the_answer_piece_by_piece_then_the_conversation(alice_browser, deployed, ollama_server):
    ollama_server.add_model("contracts-v1", answer="the clause ends the contract")

    response = alice_browser.post(
        f"/models/{deployed.id}/chat/stream/", {"message": "Either party may end this.", "max_tokens": "16"}
    )
    *pieces, last = stream_lines(response)

    assert response.status_code == 200 and response["Content-Type"] == "application/x-ndjson"
    assert len(pieces) > 1 and "".join(piece["delta"] for piece in pieces) == "the clause ends the contract"
    assert last["turns"] == [
        {"role": "user", "content": "Either party may end this."},
        {"role": "assistant", "content": "the clause ends the contract"},
    ]
    assert json.loads(last["history"]) == last["turns"]
    (asked,) = ollama_server.chat_requests()
    assert asked.body["stream"] is True and asked.body["options"] == {"temperature": 0.0, "num_predict": 16}


def test_the_page_script_is_told_what_cannot_be_asked_before_anything_is(alice, alice_browser, deployed, settings):
    settings.LOCAL_INFERENCE_SERVES_CHAT = False
    undeployed = make_model(alice, name="draft", base_model="demo-base", files=ADAPTER)

    bad = alice_browser.post(f"/models/{deployed.id}/chat/stream/", {"message": "", "temperature": "9"})
    unserved = alice_browser.post(f"/models/{undeployed.id}/chat/stream/", {"message": "Hi"})
    fetched = alice_browser.get(f"/models/{deployed.id}/chat/stream/")

    assert bad.status_code == 400
    assert bad.json()["errors"] == {"temperature": "a number from 0 to 2", "message": "write a message to send"}
    assert unserved.status_code == 409 and "draft is not deployed" in unserved.json()["errors"]["model"]
    assert fetched.status_code == 405


def test_a_model_that_fails_mid_answer_ends_the_stream_with_its_reason(alice_browser, deployed, ollama_server):
    ollama_server.add_model("contracts-v1", answer="the clause ends the contract")
    ollama_server.inject("cut")

    lines = stream_lines(alice_browser.post(f"/models/{deployed.id}/chat/stream/", {"message": "Hi"}))

    assert lines[0] == {"delta": "the "}
    assert set(lines[-1]) == {"error"} and "broke off its answer" in lines[-1]["error"]
    assert not any("turns" in line for line in lines)


def test_the_chat_page_loads_its_streaming_script_and_still_works_without_it(alice_browser, deployed):
    page = alice_browser.get(f"/models/{deployed.id}/chat/").content.decode()

    assert f'data-chat-stream="/models/{deployed.id}/chat/stream/"' in page
    assert 'src="/static/js/chat.js"' in page
    assert f'<form method="post" action="/models/{deployed.id}/chat/"' in page
