"""Webhook pages: the list with a create form (the secret shown once), a webhook's delivery log, test, secret
rotation (the new secret shown once), delete."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from . import selectors, services
from .models import Webhook


@login_required
@require_http_methods(["GET", "POST"])
def webhook_list(request):
    context = {"webhooks": selectors.webhook_list(user=request.user)[:100], "events": Webhook.Event.values}
    status = 200
    if request.method == "POST":
        try:
            webhook, secret = services.webhook_create(
                owner=request.user,
                url=request.POST.get("url", ""),
                events=request.POST.getlist("events"),
                description=request.POST.get("description", ""),
            )
        except services.WebhookInvalid as exc:
            context["error"] = f"{exc.field}: {exc}"
            context["given"] = request.POST
            status = 400
        else:
            # Rendered, not redirected: the secret must not travel through the session's messages.
            context["created"] = {"webhook": webhook, "secret": secret}
    return render(request, "webhooks/webhook_list.html", context, status=status)


@login_required
def webhook_detail(request, pk: int):
    webhook = selectors.webhook_get(user=request.user, webhook_id=pk)
    deliveries = selectors.webhook_deliveries(webhook=webhook)
    return render(request, "webhooks/webhook_detail.html", {"webhook": webhook, "deliveries": deliveries})


@login_required
@require_POST
def webhook_test(request, pk: int):
    webhook = selectors.webhook_get(user=request.user, webhook_id=pk)
    services.webhook_send_test(webhook_id=webhook.id)
    messages.success(request, "Test delivery queued: it appears in the log below.")
    return redirect("webhook-detail", pk=webhook.id)


@login_required
@require_POST
def webhook_rotate_secret(request, pk: int):
    webhook = selectors.webhook_get(user=request.user, webhook_id=pk)
    secret = services.webhook_rotate_secret(webhook_id=webhook.id)
    webhook.refresh_from_db()
    deliveries = selectors.webhook_deliveries(webhook=webhook)
    # Rendered, not redirected: the secret must not travel through the session's messages.
    context = {"webhook": webhook, "deliveries": deliveries, "rotated_secret": secret}
    return render(request, "webhooks/webhook_detail.html", context)


@login_required
@require_POST
def webhook_delete(request, pk: int):
    webhook = selectors.webhook_get(user=request.user, webhook_id=pk)
    services.webhook_delete(webhook_id=webhook.id)
    messages.success(request, "Webhook deleted.")
    return redirect("webhook-list")
