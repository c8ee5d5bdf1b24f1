from django.contrib import admin

from .models import Webhook, WebhookDelivery


@admin.register(Webhook)
class WebhookAdmin(admin.ModelAdmin):
    list_display = ("url", "owner", "events", "active", "created_at")
    list_filter = ("active",)
    search_fields = ("url", "owner__username")
    raw_id_fields = ("owner",)
    exclude = ("secret",)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ("event", "webhook", "status", "attempts", "response_code", "created_at")
    list_filter = ("status", "event")
    raw_id_fields = ("webhook",)
    readonly_fields = ("attempt_log", "payload")
