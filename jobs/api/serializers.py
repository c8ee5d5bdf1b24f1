from rest_framework import serializers

from finetune_studio.api import RefusesUnknownFields

from ..models import Dataset, Job, Trainer
from ..selectors import job_registered_model


class DatasetSerializer(serializers.ModelSerializer):
    # Typed here so the schema says what the JSON column holds.
    tools = serializers.ListField(
        child=serializers.CharField(),
        read_only=True,
        help_text="Function names the records define (OpenAI chat tools), sorted; [] for none.",
    )
    tool_call_answers = serializers.IntegerField(
        read_only=True, help_text="Records answered by a tool call (their last assistant turn calls tools)."
    )

    class Meta:
        model = Dataset
        fields = [
            "id",
            "name",
            "path",
            "format",
            "task",
            "file_format",
            "records",
            "labels",
            "label_counts",
            "tools",
            "tool_call_answers",
            "size_bytes",
            "sha256",
            "original_filename",
            "created_at",
        ]
        read_only_fields = fields


class DatasetUploadSerializer(RefusesUnknownFields, serializers.Serializer):
    file = serializers.FileField(allow_empty_file=False)
    name = serializers.CharField(max_length=200, required=False, allow_blank=True)


class DatasetSplitSerializer(RefusesUnknownFields, serializers.Serializer):
    test_fraction = serializers.FloatField(default=0.2, min_value=0.01, max_value=0.9)
    seed = serializers.IntegerField(default=42, min_value=0, max_value=2**31 - 1)


class DatasetSplitResultSerializer(serializers.Serializer):
    train = DatasetSerializer()
    test = DatasetSerializer()


class TrainerSerializer(serializers.ModelSerializer):
    available = serializers.SerializerMethodField()
    unavailable_reason = serializers.SerializerMethodField()

    class Meta:
        model = Trainer
        fields = [
            "name",
            "description",
            "hyperparameter_schema",
            "presets",
            "loads_base_model",
            "takes_validation_dataset",
            "takes_initial_adapter",
            "record_formats",
            "queue",
            "timeout_seconds",
            "available",
            "unavailable_reason",
        ]
        read_only_fields = fields

    def get_available(self, trainer) -> bool:
        return self.context["availability"][trainer.id][0]

    def get_unavailable_reason(self, trainer) -> str:
        return self.context["availability"][trainer.id][1]


class BaseModelSerializer(serializers.Serializer):
    """A base model of the catalogue (finetune_studio/base_models.py); its folder is never shown."""

    name = serializers.CharField(help_text="What a job names as base_model.")
    source = serializers.ChoiceField(choices=["demo", "declared", "folder", "hf-cache"])
    architecture = serializers.CharField()
    model_type = serializers.CharField()
    parameters = serializers.IntegerField(allow_null=True, help_text="From the safetensors headers.")
    chat_template = serializers.BooleanField(help_text="Whether its tokenizer has a chat template.")
    size_bytes = serializers.IntegerField()
    presets = serializers.DictField(help_text="Trainer name → the hyperparameters preset for this base.")


class JobSerializer(serializers.ModelSerializer):
    trainer = serializers.SlugRelatedField(slug_field="name", read_only=True)
    model = serializers.SerializerMethodField()
    initial_model = serializers.SerializerMethodField(
        help_text="The registry version this job trains further ({id, name}); null for a new adapter."
    )

    class Meta:
        model = Job
        fields = [
            "id",
            "name",
            "base_model",
            "initial_model",
            "dataset",
            "validation_dataset",
            "trainer",
            "hyperparameters",
            "preset",
            "registered_name",
            "metadata",
            "status",
            "progress",
            "exit_code",
            "error_message",
            "metrics",
            "storage_prefix",
            "model",
            "created_at",
            "updated_at",
            "queued_at",
            "started_at",
            "finished_at",
            "heartbeat_at",
        ]
        read_only_fields = fields

    def get_model(self, job) -> int | None:
        model = job_registered_model(job)
        return model.id if model else None

    def get_initial_model(self, job) -> dict | None:
        initial = job.initial_adapter
        return {"id": initial["model_id"], "name": initial["name"]} if initial else None


class JobCreateSerializer(RefusesUnknownFields, serializers.Serializer):
    name = serializers.CharField(max_length=200)
    base_model = serializers.CharField(
        max_length=200,
        required=False,
        allow_blank=True,
        default="",
        help_text="A base model the studio knows (demo-base, a declared name, a folder under BASE_MODELS_DIR, "
        "a repository in the local Hugging Face cache) or a folder inside the allowed roots; trainers that only "
        "record the name (external, example) take any name, but never a path outside those roots. Required, "
        "except with initial_model (its base).",
    )
    initial_model = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        help_text="A ready registry version of yours (its id) whose LoRA adapter the job trains further instead of "
        "starting a new one: lora-sft on more data, lora-dpo on a lora-sft chat model's preferences.",
    )
    dataset = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    validation_dataset = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        help_text="A dataset of yours held out for validation instead of a share of the training records "
        "(trainers that take one: lora-sft).",
    )
    trainer = serializers.CharField(max_length=100)
    hyperparameters = serializers.JSONField(required=False, default=dict)
    # The registered name the job's model becomes a version of (blank: derived from the job's name).
    registered_name = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    metadata = serializers.JSONField(
        required=False, default=dict, help_text="Your labels: at most 16 string keys (≤ 64) and values (≤ 512)."
    )


class JobCompleteSerializer(RefusesUnknownFields, serializers.Serializer):
    status = serializers.ChoiceField(choices=[Job.Status.SUCCEEDED, Job.Status.FAILED])
    error_message = serializers.CharField(required=False, allow_blank=True, default="", max_length=10_000)
    metrics = serializers.DictField(required=False, allow_null=True, default=None)
