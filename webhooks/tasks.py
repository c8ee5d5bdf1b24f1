"""Webhook delivery: a thin task owning the retry policy (exponential backoff, bounded attempts)."""

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError

from . import services


def backoff_seconds(retries: int) -> int:
    """10 s, 20 s, 40 s … capped at 10 minutes."""
    return min(10 * 2**retries, 600)


@shared_task(
    bind=True,
    name="webhooks.webhook_deliver",
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,  # bounded below by WEBHOOK_MAX_ATTEMPTS, which also ends the delivery as failed
    soft_time_limit=60,
    time_limit=90,
    ignore_result=True,
)
def webhook_deliver(self, delivery_id: int) -> str | None:
    last = self.request.retries + 1 >= settings.WEBHOOK_MAX_ATTEMPTS
    try:
        return services.webhook_delivery_attempt(delivery_id=delivery_id, last_attempt=last)
    except services.DeliveryRetry as exc:
        raise self.retry(exc=exc, countdown=backoff_seconds(self.request.retries)) from None
    except (OperationalError, InterfaceError) as exc:
        raise self.retry(exc=exc, countdown=backoff_seconds(self.request.retries)) from None


@shared_task(
    name="webhooks.webhook_redispatch_pending",
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=True,
    max_retries=3,
    soft_time_limit=60,
    time_limit=90,
    ignore_result=True,
)
def webhook_redispatch_pending() -> int:
    return services.webhook_redispatch_pending()
