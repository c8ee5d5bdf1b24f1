"""Webhooks: signed JSON deliveries of the lower apps' events, retried with backoff, to public targets only."""

import io

import pytest
from django.utils import timezone

from finetune_studio.sealing import unseal
from models_app import registry
from models_app import services as model_services
from models_app.models import RegisteredName
from tests.support.webhook_receiver import WebhookReceiver
from webhooks import services
from webhooks.models import Webhook, WebhookDelivery

API = "/api/v1/webhooks"


@pytest.fixture(autouse=True)
def eager_retries(monkeypatch):
    """Eager tasks that propagate errors would raise the task's Retry instead of running the next attempt:
    here a retry runs the next attempt at once (the countdown is skipped), as a worker would later."""
    from finetune_studio.celery import app

    monkeypatch.setitem(app.conf, "task_eager_propagates", False)


@pytest.fixture
def receiver(settings):
    """A receiver on loopback, which the operator allows for this test (the default refuses it)."""
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    settings.WEBHOOK_MAX_ATTEMPTS = 4
    server = WebhookReceiver().start()
    yield server
    server.stop()


def _create(client, url, events=("alias.moved",)):
    response = client.post(API, {"url": url, "events": list(events)}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def _move_champion(owner, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        model_services.model_create(owner=owner, name="a", base_model="tiny", registered_name="contracts")
    contracts = RegisteredName.objects.get(owner=owner, name="contracts")
    with django_capture_on_commit_callbacks(execute=True):
        registry.alias_move(registered_name=contracts, alias="champion", version=1, moved_by=owner)


def test_the_secret_is_shown_at_creation_and_never_again(alice_api, receiver):
    created = _create(alice_api, receiver.url)
    assert created["secret"].startswith("whsec_") and len(created["secret"]) > 40
    webhook_id = created["webhook"]["id"]
    assert "secret" not in alice_api.get(f"{API}/{webhook_id}").json()
    assert all("secret" not in row for row in alice_api.get(API).json()["results"])
    assert created["secret"] not in alice_api.get(f"{API}/{webhook_id}").content.decode()


def test_a_delivery_is_signed_so_the_receiver_verifies_it(
    alice, alice_api, receiver, django_capture_on_commit_callbacks
):
    secret = _create(alice_api, receiver.url)["secret"]
    _move_champion(alice, django_capture_on_commit_callbacks)
    assert len(receiver.received) == 1
    request = receiver.received[0]
    assert request.signature_valid(secret)
    assert not request.signature_valid("whsec_someone_elses")
    body = request.json
    assert body["event"] == "alias.moved" and request.headers["X-Studio-Event"] == "alias.moved"
    assert body["data"]["registered_name"] == "contracts" and body["data"]["to_version"] == 1
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("succeeded", 1, 200)


def test_the_secret_is_kept_sealed_so_a_database_dump_does_not_give_it_away(alice_api, receiver):
    created = _create(alice_api, receiver.url)
    stored = Webhook.objects.values_list("secret", flat=True).get(id=created["webhook"]["id"])
    assert created["secret"] not in stored and created["secret"][6:] not in stored
    assert stored.startswith("sealed:v1:")


def test_rotating_the_secret_shows_the_new_one_once_and_signs_deliveries_with_it(
    alice, alice_api, receiver, django_capture_on_commit_callbacks
):
    created = _create(alice_api, receiver.url)
    webhook_id = created["webhook"]["id"]
    rotated = alice_api.post(f"{API}/{webhook_id}/rotate-secret")
    assert rotated.status_code == 200
    new_secret = rotated.json()["secret"]
    assert new_secret.startswith("whsec_") and new_secret != created["secret"]
    assert rotated.json()["webhook"]["secret_rotated_at"]
    assert new_secret not in alice_api.get(f"{API}/{webhook_id}").content.decode()
    _move_champion(alice, django_capture_on_commit_callbacks)
    assert receiver.received[0].signature_valid(new_secret)
    assert not receiver.received[0].signature_valid(created["secret"])


def test_a_secret_sealed_under_a_key_the_studio_lost_fails_its_delivery_with_the_way_out(
    alice, alice_api, receiver, settings, django_capture_on_commit_callbacks
):
    old_key = settings.SECRET_KEY
    created = _create(alice_api, receiver.url)
    settings.SECRET_KEY = "a-new-secret-key-" + "y" * 40
    _move_champion(alice, django_capture_on_commit_callbacks)
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "failed" and receiver.received == []
    assert "SECRET_KEY_FALLBACKS" in delivery.error and "rotate the secret" in delivery.error

    settings.SECRET_KEY_FALLBACKS = [old_key]  # the operator keeps the old key while rotating
    with django_capture_on_commit_callbacks(execute=True):
        services.webhook_send_test(webhook_id=created["webhook"]["id"])
    assert receiver.received[-1].signature_valid(created["secret"])


def test_a_500_is_retried_until_the_receiver_accepts(alice, alice_api, receiver, django_capture_on_commit_callbacks):
    receiver.responses = [500, 503, 200]
    _create(alice_api, receiver.url)
    _move_champion(alice, django_capture_on_commit_callbacks)
    assert len(receiver.received) == 3
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "succeeded" and delivery.attempts == 3
    assert [entry["status_code"] for entry in delivery.attempt_log] == [500, 503, 200]
    # Every retry is the same delivery: same id and body, so a receiver can de-duplicate.
    assert len({request.headers["X-Studio-Delivery"] for request in receiver.received}) == 1
    assert len({request.body for request in receiver.received}) == 1


def test_a_receiver_that_keeps_failing_ends_as_failed_after_the_last_attempt(
    alice, alice_api, receiver, django_capture_on_commit_callbacks
):
    receiver.responses = [500]
    _create(alice_api, receiver.url)
    _move_champion(alice, django_capture_on_commit_callbacks)
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("failed", 4, 500)
    assert len(receiver.received) == 4


def test_a_4xx_is_not_retried_and_a_redirect_is_not_followed(
    alice, alice_api, receiver, django_capture_on_commit_callbacks
):
    receiver.responses = [("redirect", "http://169.254.169.254/latest/meta-data/")]
    _create(alice_api, receiver.url)
    _move_champion(alice, django_capture_on_commit_callbacks)
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "failed" and delivery.response_code == 302 and delivery.attempts == 1
    assert "not followed" in delivery.error
    assert len(receiver.received) == 1


def test_a_slow_receiver_times_out_quickly(alice, alice_api, receiver, settings, django_capture_on_commit_callbacks):
    settings.WEBHOOK_READ_TIMEOUT = 1
    settings.WEBHOOK_MAX_ATTEMPTS = 1
    receiver.responses = [("sleep", 3)]
    _create(alice_api, receiver.url)
    started = timezone.now()
    _move_champion(alice, django_capture_on_commit_callbacks)
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "failed" and "Timeout" in delivery.error
    assert (timezone.now() - started).total_seconds() < 2.5


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://localhost/hook",
        "http://10.0.0.5/hook",
        "http://192.168.1.10/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
        "ftp://example.com/hook",
        "http://user:pass@example.com/hook",
    ],
)
def test_private_and_odd_targets_are_refused_by_default(alice_api, url):
    response = alice_api.post(API, {"url": url, "events": ["job.finished"]}, format="json")
    assert response.status_code == 400
    assert "url" in response.json()["errors"]
    assert not Webhook.objects.exists()


def test_a_target_refused_at_delivery_time_is_never_called(
    alice, alice_api, receiver, settings, django_capture_on_commit_callbacks
):
    _create(alice_api, receiver.url)
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False  # the operator tightened the rule after creation
    _move_champion(alice, django_capture_on_commit_callbacks)
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "failed" and delivery.error.startswith("refused")
    assert receiver.received == []


def _resolve_names(monkeypatch, answers):
    """The system resolver, answering ``answers[name]()`` (addresses, space-separated) for the names given (a DNS
    the test controls)."""
    import socket

    real_getaddrinfo = socket.getaddrinfo

    def resolver(host, port, *args, **kwargs):
        if host not in answers:
            return real_getaddrinfo(host, port, *args, **kwargs)
        answer = answers[host]()
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)) for address in answer.split()]

    monkeypatch.setattr(socket, "getaddrinfo", resolver)


def test_a_delivery_connects_to_the_address_it_checked_not_to_a_later_dns_answer(
    alice, alice_api, receiver, settings, monkeypatch, django_capture_on_commit_callbacks
):
    """DNS rebinding: a name that answers with an allowed address for the check, then with another one,
    is still called at the checked address; the Host header keeps the name."""
    lookups = []

    def rebinding():
        lookups.append(1)
        # The creation check and the delivery check see the receiver; any later lookup a rebinding answer.
        return "127.0.0.1" if len(lookups) <= 2 else "192.0.2.1"

    _resolve_names(monkeypatch, {"hooks.example.com": rebinding})
    settings.WEBHOOK_CONNECT_TIMEOUT = 0.5
    secret = _create(alice_api, f"http://hooks.example.com:{receiver.port}/hook")["secret"]
    _move_champion(alice, django_capture_on_commit_callbacks)
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.response_code) == ("succeeded", 200), delivery.error
    assert len(lookups) == 2  # resolved by the two checks only, never again for the connection
    assert receiver.received[0].headers["Host"] == f"hooks.example.com:{receiver.port}"
    assert receiver.received[0].signature_valid(secret)


def test_a_name_with_several_addresses_is_delivered_to_the_first_that_takes_the_connection(
    alice, alice_api, receiver, monkeypatch, django_capture_on_commit_callbacks
):
    # 127.0.0.2 is loopback too, but nothing listens there: refused, so the next checked address is tried.
    _resolve_names(monkeypatch, {"hooks.example.com": lambda: "127.0.0.2 127.0.0.1"})
    _create(alice_api, f"http://hooks.example.com:{receiver.port}/hook")
    _move_champion(alice, django_capture_on_commit_callbacks)
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("succeeded", 1, 200), delivery.error
    assert len(receiver.received) == 1


def test_behind_an_egress_proxy_a_checked_delivery_goes_through_the_proxy(
    alice, alice_api, settings, monkeypatch, django_capture_on_commit_callbacks
):
    settings.WEBHOOK_MAX_ATTEMPTS = 1
    proxy = WebhookReceiver().start()  # answers 200 as a forwarding proxy would
    try:
        # A public address for the check (nothing is ever sent to it: the proxy is asked instead).
        _resolve_names(
            monkeypatch, {"hooks.example.com": lambda: "93.184.215.14", "intranet.example.com": lambda: "10.0.0.5"}
        )
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        refused = alice_api.post(API, {"url": "http://intranet.example.com/hook", "events": ["alias.moved"]})
        assert refused.status_code == 400 and "private" in refused.json()["errors"]["url"][0]  # still checked
        secret = _create(alice_api, "http://hooks.example.com/hook")["secret"]
        _move_champion(alice, django_capture_on_commit_callbacks)
    finally:
        proxy.stop()
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.response_code) == ("succeeded", 200), delivery.error
    assert proxy.received[0].path == "http://hooks.example.com/hook"  # the absolute form a proxy is sent
    assert proxy.received[0].signature_valid(secret)


def test_an_https_delivery_checks_the_certificate_against_the_name_while_connecting_to_the_checked_address(
    alice, alice_api, settings, monkeypatch, tmp_path, django_capture_on_commit_callbacks
):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    settings.WEBHOOK_MAX_ATTEMPTS = 1
    server = WebhookReceiver(tls_name="hooks.example.com", folder=tmp_path).start()
    try:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", server.ca_file)
        _resolve_names(
            monkeypatch, {"hooks.example.com": lambda: "127.0.0.1", "other.example.com": lambda: "127.0.0.1"}
        )
        secret = _create(alice_api, f"https://hooks.example.com:{server.port}/hook")["secret"]
        # The same receiver under a name its certificate does not carry.
        _create(alice_api, f"https://other.example.com:{server.port}/hook")
        _move_champion(alice, django_capture_on_commit_callbacks)
    finally:
        server.stop()
    by_url = {delivery.webhook.url: delivery for delivery in WebhookDelivery.objects.select_related("webhook")}
    good = by_url[f"https://hooks.example.com:{server.port}/hook"]
    assert (good.status, good.response_code) == ("succeeded", 200), good.error
    assert len(server.received) == 1 and server.received[0].signature_valid(secret)
    bad = by_url[f"https://other.example.com:{server.port}/hook"]
    assert bad.status == "failed" and "other.example.com" in bad.error and "SSLError" in bad.error


def test_unknown_events_are_refused(alice_api, receiver):
    response = alice_api.post(API, {"url": receiver.url, "events": ["job.exploded"]}, format="json")
    assert response.status_code == 400 and "events" in response.json()["errors"]


def test_job_finished_and_model_created_reach_their_subscribers(
    alice, alice_api, receiver, django_capture_on_commit_callbacks
):
    from jobs import services as job_services
    from tests.factories import make_trained_job as make_job

    _create(alice_api, receiver.url, events=["job.finished", "model.created"])
    job = make_job(alice, status="running")
    with django_capture_on_commit_callbacks(execute=True):
        job_services.job_complete(job_id=job.id, status="succeeded")
    events = [request.json["event"] for request in receiver.received]
    assert events == ["job.finished", "model.created"]
    assert receiver.received[0].json["data"]["status"] == "succeeded"
    assert receiver.received[1].json["data"]["version"] == 1


def test_only_the_owners_webhooks_receive_the_owners_events(
    alice, bob, api_client_for, receiver, django_capture_on_commit_callbacks
):
    _create(api_client_for(bob), receiver.url)
    _move_champion(alice, django_capture_on_commit_callbacks)
    assert receiver.received == [] and not WebhookDelivery.objects.exists()


def test_the_page_creates_shows_the_secret_once_and_sends_a_test(
    alice_browser, receiver, django_capture_on_commit_callbacks
):
    page = alice_browser.post("/webhooks/", {"url": receiver.url, "events": ["alias.moved"]})
    assert page.status_code == 200 and b"data-webhook-secret" in page.content
    webhook = Webhook.objects.get()
    secret = unseal(webhook.secret)
    assert secret.encode() in page.content
    detail = alice_browser.get(f"/webhooks/{webhook.id}/")
    assert secret.encode() not in detail.content
    with django_capture_on_commit_callbacks(execute=True):
        assert alice_browser.post(f"/webhooks/{webhook.id}/test/").status_code == 302
    assert receiver.received[0].json["event"] == "ping"
    assert receiver.received[0].signature_valid(secret)
    assert b"data-delivery" in alice_browser.get(f"/webhooks/{webhook.id}/").content


def test_the_page_rotates_the_secret_and_shows_the_new_one_once(alice_api, alice_browser, receiver):
    webhook_id = _create(alice_api, receiver.url)["webhook"]["id"]
    client = alice_browser
    page = client.post(f"/webhooks/{webhook_id}/rotate-secret/")
    assert page.status_code == 200
    shown = page.content.decode()
    secret = shown.split("deliveries from now on are signed with it:</p>\n  <p><code>")[1].split("<")[0]
    assert secret.startswith("whsec_")
    assert secret not in client.get(f"/webhooks/{webhook_id}/").content.decode()
    assert "rotated" in client.get(f"/webhooks/{webhook_id}/").content.decode()


def test_the_page_says_why_a_target_is_refused(alice_browser):
    page = alice_browser.post("/webhooks/", {"url": "http://127.0.0.1/x", "events": ["alias.moved"]})
    assert page.status_code == 400 and b"loopback" in page.content


def test_pending_deliveries_left_behind_are_sent_again(alice, receiver, django_capture_on_commit_callbacks):
    webhook, _ = services.webhook_create(owner=alice, url=receiver.url, events=["alias.moved"])
    stale = WebhookDelivery.objects.create(webhook=webhook, event="alias.moved", payload={"x": 1})
    WebhookDelivery.objects.filter(id=stale.id).update(created_at=timezone.now() - timezone.timedelta(hours=1))
    assert services.webhook_redispatch_pending() == 1
    assert WebhookDelivery.objects.get(id=stale.id).status == "succeeded"


def test_after_a_secret_key_rotation_resealing_lets_the_old_key_go(
    alice, alice_api, receiver, settings, django_capture_on_commit_callbacks
):
    from django.core.management import CommandError, call_command

    old_key = settings.SECRET_KEY
    kept = _create(alice_api, receiver.url)
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "a-new-secret-key-" + "z" * 40, [old_key]
    call_command("webhook_secrets_reseal", stdout=io.StringIO())
    settings.SECRET_KEY_FALLBACKS = []  # the old key is gone: the secret still signs
    with django_capture_on_commit_callbacks(execute=True):
        services.webhook_send_test(webhook_id=kept["webhook"]["id"])
    assert receiver.received[-1].signature_valid(kept["secret"])

    settings.SECRET_KEY = "yet-another-key-" + "w" * 40  # lost without a fallback: named, exit 1
    with pytest.raises(CommandError, match=f"webhooks {kept['webhook']['id']}"):
        call_command("webhook_secrets_reseal", stdout=io.StringIO())
