"""A new user's first minutes, in a real browser against a live studio with its worker.

Log in, upload the sample contracts dataset, train with the example trainer while the log lines
and the status arrive live, see the model appear, download its ZIP, evaluate it through the
Ollama-speaking test server, read the results, sign out. Every page is photographed under
test-artifacts/screenshots/ (desktop and phone width) so a person can look at them.
"""

import io
import json
import re
import zipfile

import pytest

from conftest import PASSWORD
from models_app.models import RegisteredModel
from tests.support.ollama_server import answer_from_mapping
from tests.support.processes import ROOT

from .conftest import DESKTOP

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SAMPLES = ROOT / "samples" / "contracts"
BASE_OLLAMA_MODEL = "llama3.2:3b"
FINE_TUNED_OLLAMA_MODEL = "contracts-ft"
# Enough epochs that the job is still running when its page opens (each takes ~0.1 s).
EPOCHS = 40


def teach_ollama(ollama) -> None:
    """The base model always answers one label; the fine-tune knows every test clause."""
    records = [json.loads(line) for line in (SAMPLES / "test.jsonl").read_text().splitlines() if line.strip()]
    ollama.add_model(BASE_OLLAMA_MODEL, answer="termination")
    ollama.add_model(
        FINE_TUNED_OLLAMA_MODEL,
        answer=answer_from_mapping({record["input"]: record["output"] for record in records}, default="termination"),
    )


def _mark_page(page) -> None:
    """A flag that only survives as long as the page is not reloaded."""
    page.evaluate("window.__sameDocument = true")


def _still_same_document(page) -> bool:
    return page.evaluate("window.__sameDocument === true")


def _upload_dataset(page, base_url: str, filename: str, name: str) -> int:
    page.goto(f"{base_url}/datasets/")
    page.set_input_files("#id_file", str(SAMPLES / filename))
    page.fill("#id_name", name)
    page.get_by_role("button", name="Upload").click()
    page.wait_for_url(re.compile(r"/datasets/\d+/$"))
    assert page.get_by_role("heading", level=1).inner_text() == name
    return int(page.url.rstrip("/").rsplit("/", 1)[1])


def test_a_new_user_trains_downloads_and_evaluates_a_model_in_the_browser(
    browser_user, studio, ollama, browser, screenshots
):
    teach_ollama(ollama)
    context = browser.new_context(viewport=DESKTOP, accept_downloads=True)
    context.set_default_timeout(20_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    # Sign in: anonymous visitors are sent to the login page.
    page.goto(f"{studio}/")
    page.wait_for_url(re.compile(r"/accounts/login/"))
    screenshots.take(page, "login", phone=True)
    page.fill("#id_username", "alice")
    page.fill("#id_password", PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{studio}/")
    page.wait_for_selector("[data-live-state].connected")
    screenshots.take(page, "dashboard-empty", phone=True)

    page.goto(f"{studio}/datasets/")
    screenshots.take(page, "datasets-empty")
    train_id = _upload_dataset(page, studio, "train.jsonl", "contracts-train")
    assert "200" in page.locator("dl.meta").inner_text()
    screenshots.take(page, "dataset-detail", phone=True)
    _upload_dataset(page, studio, "test.jsonl", "contracts-test")
    page.goto(f"{studio}/datasets/")
    screenshots.take(page, "datasets", phone=True)

    # A job with the example trainer, started from the dataset's page.
    page.goto(f"{studio}/datasets/{train_id}/")
    page.get_by_role("link", name="Train on it").click()
    page.wait_for_url(re.compile(r"/jobs/new/"))
    page.fill("#id_name", "contracts-demo")
    page.fill("#id_base_model", BASE_OLLAMA_MODEL)
    assert page.locator("#id_trainer").input_value() == "example"
    page.fill("#id_hp_epochs", str(EPOCHS))
    screenshots.take(page, "job-new", phone=True)
    page.get_by_role("button", name="Start job").click()
    page.wait_for_url(re.compile(r"/jobs/\d+/$"))
    job_url = page.url

    # Log lines and the status arrive over SSE while the page stays the same document.
    _mark_page(page)
    page.wait_for_selector("[data-log-lines] .log-line")
    page.wait_for_selector("[data-log-state]:text('live'), [data-log-state]:text-matches('ended')")
    page.wait_for_function("document.querySelector('[data-job-status]').textContent.trim() === 'Running'")
    assert _still_same_document(page), "the first log lines needed a reload"
    screenshots.take(page, "job-running", phone=True)
    page.wait_for_function(
        "window.__sameDocument === true"
        " && document.querySelector('[data-job-status]').textContent.trim() === 'Succeeded'",
        timeout=60_000,
    )
    assert "epoch" in page.locator("[data-log-lines]").inner_text()

    # The model is created from the finished job; the page shows a link to it.
    model_link = page.get_by_role("link", name=re.compile(r"^Model: "))
    model_link.wait_for(timeout=30_000)
    page.wait_for_selector("[data-log-lines] .log-line")
    screenshots.take(page, "job-succeeded", phone=True)

    page.goto(job_url + "logs/")
    page.wait_for_selector("[data-log-state]:text-matches('ended')")
    assert page.locator("[data-log-lines] .log-line").count() > EPOCHS
    screenshots.take(page, "logs-viewer", phone=True)

    page.goto(job_url)
    page.get_by_role("link", name=re.compile(r"^Model: ")).click()
    page.wait_for_url(re.compile(r"/models/\d+/$"))
    model_url = page.url
    screenshots.take(page, "model-detail", phone=True)

    with page.expect_download() as download_info:
        page.get_by_role("link", name=re.compile(r"^Download ZIP")).click()
    download = download_info.value
    archive = zipfile.ZipFile(io.BytesIO(download.path().read_bytes()))
    assert archive.testzip() is None
    names = archive.namelist()
    assert any(name.endswith("model.joblib") for name in names), names

    page.goto(f"{studio}/models/")
    screenshots.take(page, "models", phone=True)

    # Evaluate the model against its base through the Ollama test server.
    page.goto(model_url)
    page.get_by_role("link", name="Evaluate").click()
    page.wait_for_url(re.compile(r"/evaluations/new/"))
    page.select_option("#id_test_set_path", label="contracts-test (60 records)")
    page.fill("#id_base_model_name", BASE_OLLAMA_MODEL)
    page.fill("#id_fine_tuned_name", FINE_TUNED_OLLAMA_MODEL)
    # The sample is instruction/input/output data (generation by its format) whose answers are five labels.
    page.select_option("#id_task", "classification")
    screenshots.take(page, "evaluation-new", phone=True)
    page.get_by_role("button", name="Start evaluation").click()
    page.wait_for_url(re.compile(r"/evaluations/\d+/$"))
    page.get_by_role("heading", name="Metrics").wait_for(timeout=60_000)
    verdict = page.locator(".card", has=page.locator("p.hint", has_text="bootstrap")).inner_text()
    assert "significant improvement" in verdict
    assert "100.0" in page.locator(".grid .card").first.inner_text()
    assert page.locator("tr[data-outcome]").count() > 0
    page.get_by_role("button", name="Fixed by fine-tuning").click()
    assert page.locator("tr[data-outcome='fixed']:visible").count() > 0
    assert page.locator("tr[data-outcome='both_wrong']:visible").count() == 0
    screenshots.take(page, "evaluation-detail", phone=True)
    assert len(ollama.chat_requests(model=FINE_TUNED_OLLAMA_MODEL)) == 60

    # Chat with the model where Ollama serves it (its deployment recorded as the Deploy button records it): the
    # answer is written into the same page as it streams, and the next message carries the conversation on.
    RegisteredModel.objects.filter(id=int(model_url.rstrip("/").rsplit("/", 1)[1])).update(
        ollama_name=FINE_TUNED_OLLAMA_MODEL
    )
    clause = json.loads((SAMPLES / "test.jsonl").read_text().splitlines()[0])
    page.goto(model_url)
    page.get_by_role("link", name="Chat", exact=True).click()
    page.wait_for_url(re.compile(r"/models/\d+/chat/$"))
    _mark_page(page)
    for message in (clause["input"], "And the next one?"):
        page.fill("#id_message", message)
        with page.expect_response(re.compile(r"/chat/stream/$")) as streamed:
            page.get_by_role("button", name="Send").click()
        assert streamed.value.status == 200
        page.wait_for_function("document.querySelector('#id_message').value === ''")
    turns = page.locator("[data-chat-turns] li pre").all_inner_texts()
    assert turns == [clause["input"], clause["output"], "And the next one?", clause["output"]]
    assert _still_same_document(page), "the chat reloaded the page"
    asked = ollama.chat_requests(model=FINE_TUNED_OLLAMA_MODEL)[-1].body["messages"]
    assert [turn["content"] for turn in asked] == turns[:3]
    screenshots.take(page, "model-chat", phone=True)

    page.goto(f"{studio}/evaluations/")
    screenshots.take(page, "evaluations", phone=True)
    page.goto(f"{studio}/jobs/")
    screenshots.take(page, "jobs", phone=True)
    page.goto(f"{studio}/accounts/token/")
    screenshots.take(page, "token", phone=True)

    # A lost live connection shows in the top bar and comes back by itself: here the first attempt
    # meets a proxy's 502, after which the browser's EventSource would give up for good.
    refusals = {"left": 1}

    def bad_gateway_once(route):
        if refusals["left"]:
            refusals["left"] -= 1
            route.fulfill(status=502, body="bad gateway")
        else:
            route.continue_()

    page.route("**/events/", bad_gateway_once)
    page.reload()
    page.wait_for_selector("[data-live-state='lost']")
    page.wait_for_selector("[data-live-state='connected']")
    page.unroute("**/events/")
    page.goto(f"{studio}/")
    page.wait_for_selector("[data-live-state].connected")
    screenshots.take(page, "dashboard", phone=True)

    page.get_by_role("button", name="Sign out").click()
    page.goto(f"{studio}/models/")
    page.wait_for_url(re.compile(r"/accounts/login/"))
    assert errors == [], f"JavaScript errors on the pages: {errors}"
    context.close()
