from rest_framework import serializers

from finetune_studio.api import RefusesUnknownFields
from finetune_studio.base_models import BaseModelRefused, base_model_resolve
from finetune_studio.registry_names import InvalidRegisteredName, check_registered_name

from .. import lineage
from ..models import RegisteredModel

COMMON_FIELDS = (
    "id",
    "owner",
    "registered_name",
    "version",
    "name",
    "description",
    "base_model",
    "type",
    "job",
    "status",
    "total_size",
    "storage_path",
    "lora_adapters_path",
    "gguf_path",
    "ollama_name",
    "deploy_status",
    "created_at",
    "updated_at",
)
DEPLOY_FIELDS = ("ollama_base", "ollama_digest", "deployed_at", "deploy_error", "deploy_details")


class ModelListSerializer(serializers.ModelSerializer):
    """One row of the list: no manifest or loss history (they can be large), see the detail for those."""

    owner = serializers.IntegerField(source="owner_id", read_only=True)
    registered_name = serializers.CharField(source="registered_name.name", read_only=True, default=None)

    class Meta:
        model = RegisteredModel
        fields = COMMON_FIELDS
        read_only_fields = fields


class ModelDetailSerializer(serializers.ModelSerializer):
    owner = serializers.IntegerField(source="owner_id", read_only=True)
    registered_name = serializers.CharField(source="registered_name.name", read_only=True, default=None)
    file_count = serializers.SerializerMethodField()
    deployment = serializers.SerializerMethodField()
    deploy_attempt = serializers.SerializerMethodField()
    lineage = serializers.SerializerMethodField()

    class Meta:
        model = RegisteredModel
        fields = (
            *COMMON_FIELDS,
            *DEPLOY_FIELDS,
            "deploy_finished_at",
            "deployment",
            "deploy_attempt",
            "files",
            "file_count",
            "training_metrics",
            "eval_results",
            "lineage",
        )
        read_only_fields = fields

    def get_file_count(self, model) -> int:
        return len(model.files)

    def get_deployment(self, model) -> dict | None:
        """The live deployment (what Ollama serves), null when never deployed; a failed attempt leaves it."""
        return lineage.live_deployment(model)

    def get_deploy_attempt(self, model) -> dict:
        """The last attempt's outcome: status, error, error_code, target, base, started_at, finished_at."""
        return lineage.deploy_attempt(model)

    def get_lineage(self, model) -> dict:
        """Dataset, trainer and hyperparameters, base identity, chat template hash, metrics, evaluations, Ollama."""
        request = self.context.get("request")
        if request is None:
            return lineage.model_lineage(model)
        return lineage.lineage_for(request.user, model)


class ModelDeploySerializer(RefusesUnknownFields, serializers.Serializer):
    """Both optional: the name defaults to the model's (slug + id), the base to the one Ollama knows it by."""

    ollama_name = serializers.CharField(max_length=150, required=False, allow_blank=True, default="")
    base = serializers.CharField(max_length=150, required=False, allow_blank=True, default="")

    def validate(self, attrs):
        return {key: value.strip() or None for key, value in attrs.items()}


def recorded_base_model(value: str) -> str:
    """Any name is recorded as given, but a path only inside the allowed base-model folders."""
    try:
        return base_model_resolve(value, loadable=False).name
    except BaseModelRefused as refused:
        raise serializers.ValidationError(str(refused)) from None


class ModelWriteSerializer(RefusesUnknownFields, serializers.Serializer):
    """What a client may set; storage paths, manifest and sizes are the server's."""

    name = serializers.CharField(max_length=255)
    description = serializers.CharField(allow_blank=True, required=False, default="")
    base_model = serializers.CharField(max_length=200)
    type = serializers.ChoiceField(choices=RegisteredModel.Type.choices, default=RegisteredModel.Type.LORA)
    status = serializers.ChoiceField(choices=RegisteredModel.Status.choices, default=RegisteredModel.Status.PENDING)
    job = serializers.IntegerField(min_value=1, required=False, allow_null=True, default=None)
    training_metrics = serializers.DictField(required=False, default=dict)
    # The registered name this upload becomes the next version of (blank: derived from ``name``).
    registered_name = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")

    def validate_registered_name(self, value: str) -> str:
        if not value:
            return value
        try:
            return check_registered_name(value)
        except InvalidRegisteredName as exc:
            raise serializers.ValidationError(str(exc)) from None

    def validate_name(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError("The name may not be blank.")
        return value.strip()

    def validate_base_model(self, value: str) -> str:
        return recorded_base_model(value)


class ModelUpdateSerializer(RefusesUnknownFields, serializers.Serializer):
    name = serializers.CharField(max_length=255)
    description = serializers.CharField(allow_blank=True)
    base_model = serializers.CharField(max_length=200)
    type = serializers.ChoiceField(choices=RegisteredModel.Type.choices)
    status = serializers.ChoiceField(choices=RegisteredModel.Status.choices)

    def validate_name(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError("The name may not be blank.")
        return value.strip()

    def validate_base_model(self, value: str) -> str:
        return recorded_base_model(value)

    def unknown_field_error(self, name: str) -> str:
        return f"This field is read-only or unknown; a model's {', '.join(self.fields)} can be changed."


class ModelFileSerializer(serializers.Serializer):
    path = serializers.CharField()
    size = serializers.IntegerField()
    sha256 = serializers.CharField()
    crc32 = serializers.CharField()
    content_type = serializers.CharField()
    kind = serializers.CharField()
