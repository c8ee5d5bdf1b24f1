from rest_framework import serializers

from finetune_studio.api import RefusesUnknownFields

from ..models import Webhook, WebhookDelivery


class WebhookSerializer(serializers.ModelSerializer):
    """What reads show: never the secret (it is given once, in the creation or rotation answer)."""

    owner = serializers.IntegerField(source="owner_id", read_only=True)

    class Meta:
        model = Webhook
        fields = ("id", "owner", "url", "events", "description", "active", "created_at", "secret_rotated_at")
        read_only_fields = fields


class WebhookCreateSerializer(RefusesUnknownFields, serializers.Serializer):
    url = serializers.CharField(max_length=500)
    events = serializers.ListField(child=serializers.CharField(max_length=50), allow_empty=False, max_length=10)
    description = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


class WebhookDeliverySerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookDelivery
        fields = (
            "id",
            "delivery_id",
            "event",
            "status",
            "attempts",
            "response_code",
            "error",
            "attempt_log",
            "payload",
            "created_at",
            "last_attempt_at",
            "delivered_at",
        )
        read_only_fields = fields
