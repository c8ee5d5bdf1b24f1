from rest_framework import serializers

from ..models import RegisteredModel, RegisteredName


class VersionSerializer(serializers.ModelSerializer):
    """A version in a name's listing: the model's id and what tells versions apart."""

    model = serializers.IntegerField(source="id", read_only=True)

    class Meta:
        model = RegisteredModel
        fields = ("version", "model", "name", "status", "base_model", "job", "total_size", "eval_results", "created_at")
        read_only_fields = fields


class RegisteredNameSerializer(serializers.ModelSerializer):
    owner = serializers.IntegerField(source="owner_id", read_only=True)
    version_count = serializers.IntegerField(read_only=True, default=None)
    url = serializers.SerializerMethodField()

    class Meta:
        model = RegisteredName
        fields = ("name", "owner", "description", "last_version", "version_count", "url", "created_at")
        read_only_fields = fields

    def get_url(self, registered) -> str:
        return f"/api/v1/registry/{registered.name}"
