from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from ..selectors import endpoint_default_name, endpoint_list, endpoint_statuses


class EndpointStatusSerializer(serializers.Serializer):
    name = serializers.CharField()
    kind = serializers.CharField()
    source = serializers.CharField(help_text="built-in, settings (INFERENCE_ENDPOINTS) or admin")
    enabled = serializers.BooleanField()
    available = serializers.BooleanField()
    reason = serializers.CharField(help_text="Why it is unavailable; empty when available.")
    models = serializers.ListField(child=serializers.CharField(), allow_null=True)
    supports_schema = serializers.BooleanField(help_text="Whether it enforces a JSON schema on answers.")
    concurrency = serializers.IntegerField()
    default = serializers.BooleanField()


class EndpointListSerializer(serializers.Serializer):
    default_endpoint = serializers.CharField()
    results = EndpointStatusSerializer(many=True)


class EndpointListView(APIView):
    """The operator's inference endpoints, checked now. Names only: a user never gives a URL, nor sees a key."""

    @extend_schema(responses=EndpointListSerializer, summary="List inference endpoints and their availability")
    def get(self, request):
        default = endpoint_default_name()
        # Servers' addresses are the operator's business: other users read the reason without them.
        urls = {endpoint.name: endpoint.url for endpoint in endpoint_list() if endpoint.url}
        results = []
        for status in endpoint_statuses():
            reason = status.reason
            url = urls.get(status.name)
            if url and not request.user.is_staff:
                reason = reason.replace(f" ({url})", "").replace(url, "its server")
            results.append({**status.__dict__, "reason": reason, "default": status.name == default})
        return Response(EndpointListSerializer({"default_endpoint": default, "results": results}).data)
