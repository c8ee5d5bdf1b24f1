"""Webhook writes: endpoints, the deliveries an event makes, and each delivery attempt.

Deliveries are rows first (created in the event's own transaction, queued after commit), so an
event is never lost to a broker outage: ``webhook_redispatch_pending`` sends what is left. An
attempt posts the JSON body once, signed, with short timeouts and redirects not followed; what
came back is appended to the delivery's log. 5xx, 429, timeouts and connection errors are worth
retrying (DeliveryRetry: the task backs off); anything else ends the delivery as failed.
"""

import hashlib
import hmac
import json
import logging
import secrets
import time
from typing import Any

import requests
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from finetune_studio.sealing import SealBroken, reseal, seal, unseal

from .models import Webhook, WebhookDelivery
from .targets import TargetRefused, check_target, post_to_target

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Studio-Signature"
TIMESTAMP_HEADER = "X-Studio-Timestamp"
MAX_WEBHOOKS_PER_USER = 20
RESPONSE_EXCERPT = 500


class WebhookInvalid(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class DeliveryRetry(Exception):
    """This attempt failed in a way a later one may not (5xx, 429, timeout, connection refused)."""


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256(secret, ``<timestamp>.<body>``): receivers recompute and compare."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def webhook_create(*, owner, url: str, events: list[str], description: str = "") -> tuple[Webhook, str]:
    """A new endpoint and its secret. The secret is returned here only: no read shows it again."""
    try:
        url = check_target(url).url
    except TargetRefused as exc:
        raise WebhookInvalid("url", str(exc)) from None
    if len(url) > 500:
        raise WebhookInvalid("url", "the URL is longer than 500 characters")
    if not isinstance(events, list) or not events:
        raise WebhookInvalid("events", f"choose one or more of {', '.join(Webhook.Event.values)}")
    unknown = sorted({event for event in events if event not in Webhook.Event.values}, key=str)
    if unknown:
        raise WebhookInvalid("events", f"unknown event(s) {', '.join(map(str, unknown))}")
    if Webhook.objects.filter(owner=owner).count() >= MAX_WEBHOOKS_PER_USER:
        raise WebhookInvalid("url", f"at most {MAX_WEBHOOKS_PER_USER} webhooks per user")
    secret = _new_secret()
    webhook = Webhook.objects.create(
        owner=owner, url=url, events=sorted(set(events)), description=(description or "")[:200], secret=seal(secret)
    )
    return webhook, secret


def _new_secret() -> str:
    return "whsec_" + secrets.token_hex(24)


def webhook_rotate_secret(*, webhook_id: int) -> str:
    """A new signing secret for the webhook, returned here only; deliveries attempted from now on use it (a
    receiver should accept both while it switches over). Also the way out for a secret sealed under a lost key."""
    secret = _new_secret()
    Webhook.objects.filter(id=webhook_id).update(secret=seal(secret), secret_rotated_at=timezone.now())
    return secret


def webhook_secrets_reseal() -> tuple[int, list[int]]:
    """Every webhook's secret sealed again under the current SECRET_KEY, for dropping an old key from
    SECRET_KEY_FALLBACKS. Returns (resealed, ids of webhooks whose secret no configured key opens)."""
    resealed, unreadable = 0, []
    for webhook_id, sealed in Webhook.objects.values_list("id", "secret").iterator():
        try:
            renewed = reseal(sealed)
        except SealBroken:
            unreadable.append(webhook_id)
            continue
        # Only if no rotation wrote a new secret meanwhile.
        resealed += Webhook.objects.filter(id=webhook_id, secret=sealed).update(secret=renewed)
    return resealed, unreadable


def webhook_delete(*, webhook_id: int) -> None:
    Webhook.objects.filter(id=webhook_id).delete()


def _enqueue(delivery_ids: list[int]) -> None:
    from .tasks import webhook_deliver

    for delivery_id in delivery_ids:
        try:
            webhook_deliver.delay(delivery_id)
        except Exception:
            if getattr(settings, "CELERY_TASK_ALWAYS_EAGER", False):
                raise
            # The row stays pending: webhook_redispatch_pending (beat) sends it when the broker is back.
            logger.exception("Could not queue webhook delivery %s", delivery_id)


def webhook_event_publish(*, owner_id: int, event: str, data: dict[str, Any]) -> list[int]:
    """One pending delivery per active webhook of the owner subscribed to ``event``, queued after commit."""
    with transaction.atomic():
        hooks = [hook for hook in Webhook.objects.filter(owner_id=owner_id, active=True) if event in hook.events]
        ids = []
        for hook in hooks:
            delivery = WebhookDelivery.objects.create(webhook=hook, event=event, payload=data)
            ids.append(delivery.id)
        if ids:
            transaction.on_commit(lambda: _enqueue(ids))
    return ids


def webhook_send_test(*, webhook_id: int) -> WebhookDelivery:
    """A ``ping`` delivery, whatever events the webhook subscribes to (the page's "send test" button)."""
    with transaction.atomic():
        delivery = WebhookDelivery.objects.create(
            webhook_id=webhook_id, event="ping", payload={"message": "a test delivery from Finetune Studio"}
        )
        transaction.on_commit(lambda: _enqueue([delivery.id]))
    return delivery


def _body(delivery: WebhookDelivery) -> bytes:
    envelope = {
        "id": str(delivery.delivery_id),
        "event": delivery.event,
        "created_at": delivery.created_at.isoformat(),
        "data": delivery.payload,
    }
    return json.dumps(envelope, separators=(",", ":"), sort_keys=True).encode()


def _record(delivery: WebhookDelivery, *, code: int | None, error: str, started: float, final: str | None) -> None:
    now = timezone.now()
    entry = {
        "at": now.isoformat(),
        "status_code": code,
        "error": error[:RESPONSE_EXCERPT],
        "duration_ms": round((time.monotonic() - started) * 1000, 1),
    }
    with transaction.atomic():
        row = WebhookDelivery.objects.select_for_update().get(id=delivery.id)
        row.attempts += 1
        row.attempt_log = [*row.attempt_log, entry][-50:]
        row.response_code = code
        row.error = error[:5000]
        row.last_attempt_at = now
        fields = ["attempts", "attempt_log", "response_code", "error", "last_attempt_at"]
        if final is not None:
            row.status = final
            fields.append("status")
            if final == WebhookDelivery.Status.SUCCEEDED:
                row.delivered_at = now
                fields.append("delivered_at")
        row.save(update_fields=fields)


def webhook_delivery_attempt(*, delivery_id: int, last_attempt: bool) -> str | None:
    """Post the delivery once. Returns its status after the attempt; raises DeliveryRetry when a retry may
    help and this was not the last attempt. A delivery already settled is left alone (redelivered task)."""
    delivery = (
        WebhookDelivery.objects.select_related("webhook")
        .filter(id=delivery_id, status=WebhookDelivery.Status.PENDING)
        .first()
    )
    if delivery is None:
        return None
    webhook = delivery.webhook
    started = time.monotonic()
    try:
        target = check_target(webhook.url)
    except TargetRefused as exc:
        _record(delivery, code=None, error=f"refused: {exc}", started=started, final=WebhookDelivery.Status.FAILED)
        return WebhookDelivery.Status.FAILED
    try:
        secret = unseal(webhook.secret)
    except SealBroken as exc:
        error = f"the webhook's secret cannot be read: {exc}"
        _record(delivery, code=None, error=error, started=started, final=WebhookDelivery.Status.FAILED)
        return WebhookDelivery.Status.FAILED
    body = _body(delivery)
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "FinetuneStudio-Webhooks/1",
        "X-Studio-Event": delivery.event,
        "X-Studio-Delivery": str(delivery.delivery_id),
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: sign(secret, timestamp, body),
    }
    timeout = (settings.WEBHOOK_CONNECT_TIMEOUT, settings.WEBHOOK_READ_TIMEOUT)
    try:
        response = post_to_target(target, data=body, headers=headers, timeout=timeout)
    except requests.RequestException as exc:
        retry, code, error = True, None, f"{exc.__class__.__name__}: {exc}"
    else:
        code = response.status_code
        excerpt = response.text[:RESPONSE_EXCERPT] if response.content else ""
        response.close()
        if 200 <= code < 300:
            _record(delivery, code=code, error="", started=started, final=WebhookDelivery.Status.SUCCEEDED)
            return WebhookDelivery.Status.SUCCEEDED
        retry = code >= 500 or code == 429
        error = f"HTTP {code}" + (" (redirects are not followed)" if 300 <= code < 400 else "")
        error += f": {excerpt}" if excerpt else ""
    if retry and not last_attempt:
        _record(delivery, code=code, error=error, started=started, final=None)
        raise DeliveryRetry(error)
    _record(delivery, code=code, error=error, started=started, final=WebhookDelivery.Status.FAILED)
    return WebhookDelivery.Status.FAILED


def webhook_redispatch_pending() -> int:
    """Queue pending deliveries nobody is attempting (broker outage, a standalone restart)."""
    cutoff = timezone.now() - timezone.timedelta(seconds=settings.WEBHOOK_STALE_SECONDS)
    ids = list(
        WebhookDelivery.objects.filter(status=WebhookDelivery.Status.PENDING, created_at__lt=cutoff)
        .exclude(last_attempt_at__gte=cutoff)
        .values_list("id", flat=True)[:500]
    )
    _enqueue(ids)
    return len(ids)
