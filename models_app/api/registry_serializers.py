from rest_framework import serializers

from finetune_studio.api import RefusesUnknownFields

from ..models import AliasEvent, ModelAlias, PromotionGate, RegisteredModel, RegisteredName


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
        fields = ("id", "name", "owner", "description", "last_version", "version_count", "url", "created_at")
        read_only_fields = fields

    def get_url(self, registered) -> str:
        return f"/api/v1/registry/{registered.name}"


class AliasSerializer(serializers.ModelSerializer):
    version = serializers.IntegerField(source="model.version", read_only=True, default=None)
    model = serializers.IntegerField(source="model_id", read_only=True)
    moved_by = serializers.CharField(source="moved_by.get_username", read_only=True, default=None, allow_null=True)

    class Meta:
        model = ModelAlias
        fields = ("alias", "version", "model", "moved_by", "moved_at")
        read_only_fields = fields


class AliasEventSerializer(serializers.ModelSerializer):
    moved_by = serializers.CharField(source="moved_by.get_username", read_only=True, default=None, allow_null=True)

    class Meta:
        model = AliasEvent
        fields = ("alias", "from_version", "to_version", "moved_by", "moved_at", "evidence", "override_reason")
        read_only_fields = fields


class AliasMoveSerializer(RefusesUnknownFields, serializers.Serializer):
    version = serializers.IntegerField(min_value=1)
    from_version = serializers.IntegerField(min_value=1, required=False, allow_null=True, default=None)
    override_reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


class GateSerializer(RefusesUnknownFields, serializers.ModelSerializer):
    updated_by = serializers.CharField(source="updated_by.get_username", read_only=True, default=None, allow_null=True)

    class Meta:
        model = PromotionGate
        fields = ("alias", "test_set_path", "metric", "endpoint", "threshold", "updated_by", "updated_at")
        read_only_fields = ("updated_by", "updated_at")
        extra_kwargs = {"alias": {"required": False}, "endpoint": {"required": False}}
