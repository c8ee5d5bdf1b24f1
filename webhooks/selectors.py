"""Webhook reads through the viewer's permissions (owner sees theirs, staff see all)."""

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404

from finetune_studio.ownership import visible_to

from .models import Webhook, WebhookDelivery


def webhook_list(*, user) -> QuerySet[Webhook]:
    return visible_to(Webhook.objects.all(), user)


def webhook_get(*, user, webhook_id) -> Webhook:
    return get_object_or_404(webhook_list(user=user), id=webhook_id)


def webhook_deliveries(*, webhook: Webhook, limit: int = 100) -> QuerySet[WebhookDelivery]:
    return WebhookDelivery.objects.filter(webhook=webhook).order_by("-created_at", "-id")[:limit]
