"""A live studio (uvicorn + in-process worker) and a Chromium driven by Playwright, for browser tests.

The server runs the production settings against the test database, the S3 test server and an
Ollama-speaking test server; the browser is Debian's Chromium (never a downloaded one).
"""

import os
from pathlib import Path

import pytest

from conftest import PASSWORD
from tests.support.ollama_server import OllamaServer
from tests.support.processes import ROOT, asgi_server, service_env

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def pytest_collection_modifyitems(config, items):
    if Path(CHROMIUM).exists():
        return
    skip = pytest.mark.skip(reason=f"{CHROMIUM} is missing: install Debian's chromium package to run browser tests")
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def ollama():
    """The Ollama-speaking test server; the live studio's OLLAMA_URL points at it."""
    with OllamaServer() as server:
        yield server


@pytest.fixture
def browser_user(alice, settings):
    """Alice, with a password the server (production hashers, not the tests' fast MD5) can check."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher", *settings.PASSWORD_HASHERS]
    alice.set_password(PASSWORD)
    alice.save(update_fields=["password"])
    return alice


@pytest.fixture
def studio(transactional_db, ollama, tmp_path):
    """The base URL of a live studio in standalone mode (worker and beat as threads of the web process)."""
    var_dir = tmp_path / "var"
    # Beat keeps its schedule file there and does not create the folder itself.
    var_dir.mkdir()
    env = service_env(VAR_DIR=str(var_dir), OLLAMA_URL=ollama.url, EVALUATION_RETRY_BACKOFF_MS="5")
    log_path = tmp_path / "server.log"
    try:
        with asgi_server(env=env, log_path=log_path) as base_url:
            yield base_url
    finally:
        # The server's own log is the first thing to read when a browser test fails.
        if log_path.exists():
            SCREENSHOTS.parent.mkdir(parents=True, exist_ok=True)
            (SCREENSHOTS.parent / "browser-server.log").write_bytes(log_path.read_bytes())


@pytest.fixture
def browser(monkeypatch):
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls stay synchronous.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class Screenshots:
    """Full-page screenshots under test-artifacts/screenshots/, at desktop and (optionally) phone width."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.taken: list[Path] = []

    def take(self, page, name: str, *, phone: bool = False) -> None:
        self._shoot(page, f"{name}.png")
        if phone:
            page.set_viewport_size(PHONE)
            try:
                self._shoot(page, f"{name}-phone.png")
                overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
                assert overflow <= 1, f"{name} scrolls sideways by {overflow}px at phone width"
            finally:
                page.set_viewport_size(DESKTOP)

    def _shoot(self, page, filename: str) -> None:
        path = self.folder / filename
        page.screenshot(path=str(path), full_page=True)
        self.taken.append(path)


@pytest.fixture
def screenshots():
    return Screenshots(Path(os.environ.get("SCREENSHOT_DIR", SCREENSHOTS)))
