from rest_framework import serializers

from finetune_studio.api import RefusesUnknownFields

from ..models import Sweep, SweepTrial


class SweepCreateSerializer(RefusesUnknownFields, serializers.Serializer):
    name = serializers.CharField(max_length=200)
    trainer = serializers.CharField(max_length=100)
    dataset = serializers.IntegerField(min_value=1)
    base_model = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    strategy = serializers.ChoiceField(choices=Sweep.Strategy.choices)
    search_space = serializers.DictField()
    n_trials = serializers.IntegerField(min_value=1, required=False, allow_null=True, default=None)
    seed = serializers.IntegerField(required=False, allow_null=True, default=None)
    concurrency = serializers.IntegerField(min_value=1, default=1)
    test_set_path = serializers.CharField(max_length=500)
    endpoint = serializers.CharField(max_length=100, default="ollama")
    evaluation_base = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    # None: the test set's default (accuracy for a classification set, token_f1 for a generation one,
    # exact_match for one mostly answered by tool calls).
    metric = serializers.CharField(max_length=20, required=False, allow_blank=True, allow_null=True, default=None)
    registered_name = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    # The dataset every trial validates on (lora-sft); none: each trial holds out validation_fraction.
    validation_dataset = serializers.IntegerField(min_value=1, required=False, allow_null=True, default=None)
    # A registry version of yours every trial trains further; none: each trial trains a new adapter.
    initial_model = serializers.IntegerField(min_value=1, required=False, allow_null=True, default=None)


class TrialSerializer(serializers.ModelSerializer):
    state = serializers.SerializerMethodField()
    job_status = serializers.CharField(source="job.status", default=None, read_only=True)
    version = serializers.IntegerField(source="model.version", default=None, read_only=True)
    evaluation_status = serializers.CharField(source="evaluation.status", default=None, read_only=True)

    class Meta:
        model = SweepTrial
        fields = (
            "index",
            "hyperparameters",
            "state",
            "job",
            "job_status",
            "model",
            "version",
            "evaluation",
            "evaluation_status",
            "champion_evaluation",
            "error",
        )
        read_only_fields = fields

    def get_state(self, trial) -> str:
        from ..selectors import trial_state

        return trial_state(trial, sweep_status=self.context["sweep_status"])


class SweepSerializer(serializers.ModelSerializer):
    owner = serializers.IntegerField(source="owner_id", read_only=True)
    trainer = serializers.CharField(source="trainer.name", read_only=True)

    class Meta:
        model = Sweep
        fields = (
            "id",
            "owner",
            "name",
            "trainer",
            "dataset",
            "validation_dataset",
            "initial_model",
            "initial_model_name",
            "base_model",
            "registered_name",
            "strategy",
            "search_space",
            "seed",
            "n_trials",
            "concurrency",
            "test_set_path",
            "endpoint",
            "evaluation_base",
            "metric",
            "status",
            "created_at",
            "finished_at",
        )
        read_only_fields = fields
