"""No dead ends: every page a signed-in user reaches by following links from the dashboard answers, and so does
every link on it.

The world is the authorization suite's (a dataset, jobs, a model with files and an alias, an evaluation, a
sweep, a webhook… for alice, the same for bob). Alice follows every same-site ``<a href>`` breadth-first;
each must answer 200 (or a redirect to a page that does), never a 404 or a 5xx, and no page may link to one
of bob's objects. Streams (live events, log streams) are opened only as far as their status line.
"""

from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import pytest

from tests.security.world import build_world

pytestmark = pytest.mark.django_db

MAX_PAGES = 400
# Not pages: live event streams (they never end), the admin (staff only) and static files.
NOT_FOLLOWED = ("/events/", "/admin/", "/static/", "/accounts/logout/")


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            href = dict(attrs).get("href")
            if href:
                self.hrefs.append(href)


def _same_site_links(page_path: str, html: str) -> set[str]:
    parser = _Links()
    parser.feed(html)
    found = set()
    for href in parser.hrefs:
        if href.startswith(("#", "mailto:", "javascript:")):
            continue
        parts = urlsplit(urljoin("http://testserver" + page_path, href))
        if parts.netloc != "testserver":
            continue
        found.add(parts.path + (f"?{parts.query}" if parts.query else ""))
    return found


def _is_stream(response) -> bool:
    return response.streaming and "text/event-stream" in response.get("Content-Type", "")


def test_every_page_reached_from_the_dashboard_and_every_link_on_it_answers(alice, bob, alice_browser):
    build_world(alice)
    bobs = build_world(bob, tag="bob")
    bobs_paths = {
        f"/jobs/{bobs.running_job.id}/",
        f"/jobs/{bobs.finished_job.id}/",
        f"/datasets/{bobs.dataset.id}/",
        f"/models/{bobs.model.id}/",
        f"/evaluations/{bobs.evaluation.id}/",
        f"/sweeps/{bobs.sweep.id}/",
        f"/webhooks/{bobs.webhook.id}/",
        f"/registry/{bobs.registered_name.name}/",
    }

    seen, queue, broken, leaks = {"/"}, ["/"], [], []
    pages = 0
    while queue and pages < MAX_PAGES:
        path = queue.pop(0)
        response = alice_browser.get(path)
        pages += 1
        if response.status_code in (301, 302, 303):
            target = urlsplit(response["Location"])
            if target.netloc and target.netloc != "testserver":
                continue  # a presigned link to the object store
            response = alice_browser.get(target.path + (f"?{target.query}" if target.query else ""))
        if response.status_code != 200:
            broken.append((path, response.status_code))
            continue
        if response.streaming:
            # A download is read to its end (the test client's wrapper then finishes the request); a live
            # stream is left unread.
            if not _is_stream(response):
                b"".join(response.streaming_content)
            continue
        if "text/html" not in response.get("Content-Type", ""):
            continue
        for link in _same_site_links(path, response.content.decode()):
            if link.split("?")[0] in bobs_paths:
                leaks.append((path, link))
            if link not in seen and not link.startswith(NOT_FOLLOWED):
                seen.add(link)
                queue.append(link)
    assert not broken, f"links that lead nowhere (page, status): {broken}"
    assert not leaks, f"pages linking to another user's objects: {leaks}"
    assert not queue, f"more than {MAX_PAGES} pages: raise MAX_PAGES or look for a link loop"
    # The crawl reached the world's pages, not just the dashboard.
    for expected in ("/jobs/", "/datasets/", "/models/", "/evaluations/", "/registry/", "/sweeps/", "/webhooks/"):
        assert expected in seen, f"{expected} is not linked from any page"
    assert pages > 30, pages
