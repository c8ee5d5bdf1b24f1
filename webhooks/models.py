import uuid

from django.conf import settings
from django.db import models


class Webhook(models.Model):
    """A user's endpoint for events. ``secret`` signs every delivery (HMAC-SHA256); it is shown once, at creation
    or rotation, and kept sealed (encrypted under SECRET_KEY, ``finetune_studio.sealing``)."""

    class Event(models.TextChoices):
        JOB_FINISHED = "job.finished"
        MODEL_CREATED = "model.created"
        EVALUATION_COMPLETED = "evaluation.completed"
        ALIAS_MOVED = "alias.moved"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhooks")
    url = models.URLField(max_length=500)
    events = models.JSONField(default=list)
    description = models.CharField(max_length=200, blank=True)
    secret = models.CharField(
        max_length=300, help_text="The signing secret, sealed under SECRET_KEY (finetune_studio.sealing)."
    )
    secret_rotated_at = models.DateTimeField(null=True, blank=True)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "webhooks"
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["owner", "active"])]

    def __str__(self) -> str:
        return self.url


class WebhookDelivery(models.Model):
    """One event for one webhook, with every attempt (status code, error, duration) in ``attempt_log``."""

    class Status(models.TextChoices):
        PENDING = "pending"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    delivery_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    event = models.CharField(max_length=50)
    payload = models.JSONField(default=dict)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    response_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    attempt_log = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "webhook_deliveries"
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["webhook", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.event} → {self.webhook_id} ({self.status})"
