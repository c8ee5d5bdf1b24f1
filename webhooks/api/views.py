"""``/api/v1/webhooks``: thin views over the webhook services."""

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from finetune_studio.api import OwnedQuerysetMixin

from .. import selectors, services
from ..models import Webhook
from .serializers import WebhookCreateSerializer, WebhookDeliverySerializer, WebhookSerializer

CREATED = inline_serializer("WebhookCreated", {"webhook": WebhookSerializer(), "secret": serializers.CharField()})
ROTATED = inline_serializer("WebhookSecretRotated", {"webhook": WebhookSerializer(), "secret": serializers.CharField()})


@extend_schema(tags=["webhooks"])
class WebhookViewSet(OwnedQuerysetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Per-user webhook endpoints: create (the secret is in this answer only), list, detail, delete,
    rotate the secret (the new one is in that answer only), send a test, and the delivery log."""

    queryset = Webhook.objects.all()
    serializer_class = WebhookSerializer
    filter_backends: list = []

    @extend_schema(request=WebhookCreateSerializer, responses={201: CREATED})
    def create(self, request):
        given = WebhookCreateSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        try:
            webhook, secret = services.webhook_create(owner=request.user, **given.validated_data)
        except services.WebhookInvalid as exc:
            raise ValidationError({exc.field: [str(exc)]}) from None
        return Response({"webhook": WebhookSerializer(webhook).data, "secret": secret}, status=status.HTTP_201_CREATED)

    def destroy(self, request, pk=None):
        services.webhook_delete(webhook_id=self.get_object().id)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses={200: ROTATED})
    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request, pk=None):
        webhook = self.get_object()
        secret = services.webhook_rotate_secret(webhook_id=webhook.id)
        webhook.refresh_from_db()
        return Response({"webhook": WebhookSerializer(webhook).data, "secret": secret})

    @extend_schema(request=None, responses={202: WebhookDeliverySerializer})
    @action(detail=True, methods=["post"])
    def test(self, request, pk=None):
        delivery = services.webhook_send_test(webhook_id=self.get_object().id)
        delivery.refresh_from_db()
        return Response(WebhookDeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        responses={200: inline_serializer("WebhookDeliveries", {"results": WebhookDeliverySerializer(many=True)})}
    )
    @action(detail=True, methods=["get"])
    def deliveries(self, request, pk=None):
        deliveries = selectors.webhook_deliveries(webhook=self.get_object())
        return Response({"results": WebhookDeliverySerializer(deliveries, many=True).data})
