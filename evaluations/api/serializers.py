from rest_framework import serializers

from finetune_studio.api import RefusesUnknownFields
from jobs.models import Dataset

from ..models import ChatUsage, Evaluation

ENDPOINT_HELP = (
    "The name of one of the studio's inference endpoints (GET /api/v1/inference/endpoints), never a URL. "
    "Absent: the studio's default endpoint."
)


class EvaluateRequestSerializer(RefusesUnknownFields, serializers.Serializer):
    """``POST /api/v1/models/:id/evaluate``: the seed's fields, plus endpoints, options and more candidates.

    The seed's body (``test_set_path``, ``base_model_name``, ``fine_tuned_name``) keeps working: both
    candidates are then asked on the default endpoint. On the ``local`` endpoint ``base_model_name`` is a
    base-model catalogue name (default: the model's base) and leaving ``fine_tuned_name`` out means this
    model's own LoRA adapter from the registry on that base.
    """

    test_set_path = serializers.CharField(max_length=500, trim_whitespace=False)
    base_model_name = serializers.CharField(
        max_length=200, required=False, help_text="The base candidate's model name. Default: the model's base."
    )
    fine_tuned_name = serializers.CharField(
        max_length=200,
        required=False,
        allow_blank=True,
        help_text="Default: the model's Ollama name or name; on `local`, the model's own adapter on its base.",
    )
    fine_tuned_names = serializers.ListField(
        child=serializers.CharField(max_length=200), required=False, allow_empty=True, max_length=10
    )
    endpoint = serializers.CharField(
        max_length=100, required=False, help_text="Both candidates' endpoint. " + ENDPOINT_HELP
    )
    base_endpoint = serializers.CharField(
        max_length=100, required=False, help_text="The base's endpoint. " + ENDPOINT_HELP
    )
    fine_tuned_endpoint = serializers.CharField(
        max_length=100, required=False, help_text="The fine-tuned models' endpoint. " + ENDPOINT_HELP
    )
    labels = serializers.ListField(
        child=serializers.CharField(max_length=200, trim_whitespace=False), required=False, max_length=200
    )
    prompt_template = serializers.CharField(max_length=20000, required=False, trim_whitespace=False)
    max_examples = serializers.IntegerField(min_value=1, max_value=1_000_000, required=False)
    concurrency = serializers.IntegerField(min_value=1, max_value=32, required=False)
    timeout = serializers.IntegerField(min_value=1, max_value=3600, required=False)
    name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    task = serializers.ChoiceField(
        choices=Dataset.Task.choices,
        required=False,
        help_text="Default: the test set's task (generation for chat, instruction and prompt/completion records).",
    )
    judge = serializers.JSONField(
        required=False,
        help_text=(
            'Generation only: a pairwise LLM judge, `{"endpoint": <endpoint name>, "model": <model>, '
            '"prompt": <optional template with {question}, {reference_block}, {answer_a}, {answer_b}>}`.'
        ),
    )
    json_schema = serializers.JSONField(
        required=False, help_text="Generation only: a JSON schema the answers must match (metric json_valid)."
    )

    def unknown_field_error(self, name: str) -> str:
        # A server address is the operator's: a request that tries to give one is told so.
        if "url" in name.lower() or "api_key" in name.lower():
            return (
                "evaluations use the studio's inference endpoints by name (endpoint, base_endpoint, "
                "fine_tuned_endpoint); a URL or key is never accepted"
            )
        return super().unknown_field_error(name)


class ParityRequestSerializer(RefusesUnknownFields, serializers.Serializer):
    """``POST /api/v1/models/:id/parity``: a test set, and optionally the deployment's variant tags to compare."""

    test_set_path = serializers.CharField(max_length=500, trim_whitespace=False)
    variants = serializers.ListField(
        child=serializers.CharField(max_length=200),
        required=False,
        allow_empty=True,
        max_length=4,
        help_text="Ollama names of the deployment's other tags (`<name>:q8_0`…), built by you; names only.",
    )
    labels = serializers.ListField(
        child=serializers.CharField(max_length=200, trim_whitespace=False), required=False, max_length=200
    )
    task = serializers.ChoiceField(
        choices=Dataset.Task.choices,
        required=False,
        help_text="Default: the test set's task (a chat or instruction set is compared as generation).",
    )
    max_examples = serializers.IntegerField(min_value=1, max_value=1_000_000, required=False)
    concurrency = serializers.IntegerField(min_value=1, max_value=32, required=False)
    timeout = serializers.IntegerField(min_value=1, max_value=3600, required=False)
    name = serializers.CharField(max_length=200, required=False, allow_blank=True)

    def unknown_field_error(self, name: str) -> str:
        # The candidates are fixed (the adapter on local, the deployment on ollama): naming others is an error.
        return (
            "not a parity check field: the candidates are this model's adapter on the local engine and "
            "its live Ollama deployment (plus `variants`); endpoints and URLs are never given"
        )


class EvaluationUpdateSerializer(RefusesUnknownFields, serializers.Serializer):
    """What ``PUT``/``PATCH`` may change. Everything else about an evaluation is a record of what ran."""

    name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    note = serializers.CharField(max_length=10000, required=False, allow_blank=True, trim_whitespace=False)

    def unknown_field_error(self, name: str) -> str:
        return "this field cannot be changed (only name and note can)"


class EvaluationListSerializer(serializers.ModelSerializer):
    fine_tuned_names = serializers.SerializerMethodField()
    base_endpoint = serializers.CharField(read_only=True)
    fine_tuned_endpoint = serializers.CharField(read_only=True)
    summary = serializers.SerializerMethodField()
    model_name = serializers.CharField(source="model.name", default=None, read_only=True)

    class Meta:
        model = Evaluation
        fields = [
            "id",
            "name",
            "note",
            "model",
            "model_name",
            "job",
            "status",
            "test_set_path",
            "base_model_name",
            "fine_tuned_name",
            "fine_tuned_names",
            "base_endpoint",
            "fine_tuned_endpoint",
            "progress",
            "summary",
            "started_at",
            "completed_at",
            "error_message",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_fine_tuned_names(self, evaluation) -> list[str]:
        return evaluation.candidates[1:]

    def get_summary(self, evaluation) -> dict | None:
        results = evaluation.results or {}
        if not results.get("base"):
            return None
        if results.get("task") == "generation":
            headline = results["headline_metric"]
            return {
                "task": "generation",
                "headline_metric": headline,
                "base_score": results["base"][headline],
                "fine_tuned_score": results["fine_tuned"][headline],
                "delta": results["improvement"][headline],
                "verdict": results["significance"]["verdict"],
                "judge_win_rate": (results.get("judge") or {}).get("win_rate"),
            }
        return {
            "base_accuracy": results["base"]["accuracy"],
            "fine_tuned_model": results["fine_tuned"].get("model"),  # the best candidate when there are several
            "fine_tuned_accuracy": results["fine_tuned"]["accuracy"],
            "accuracy_delta": results["improvement"]["accuracy"],
            "f1_macro_delta": results["improvement"]["f1_macro"],
            "verdict": results.get("significance", {}).get("verdict"),
        }


class EvaluationSerializer(EvaluationListSerializer):
    links = serializers.SerializerMethodField()

    class Meta(EvaluationListSerializer.Meta):
        fields = [*EvaluationListSerializer.Meta.fields, "config", "results", "examples", "attempts", "links"]
        read_only_fields = fields

    def get_links(self, evaluation) -> dict:
        base = f"/api/v1/evaluations/{evaluation.id}"
        return {
            "self": base,
            "page": f"/evaluations/{evaluation.id}/",
            "export_csv": f"{base}/export.csv",
            "export_json": f"{base}/export.json",
            "cancel": f"{base}/cancel",
        }


class ChatUsageQuerySerializer(serializers.Serializer):
    days = serializers.IntegerField(
        min_value=1, max_value=366, default=30, help_text="The last N days, today included."
    )


class ChatUsageSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username", read_only=True)

    class Meta:
        model = ChatUsage
        fields = [
            "day",
            "owner",
            "model",
            "model_name",
            "source",
            "requests",
            "failures",
            "prompt_tokens",
            "completion_tokens",
        ]
        read_only_fields = fields
