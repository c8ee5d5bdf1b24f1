from django.conf import settings
from django.db import models


class RegisteredModel(models.Model):
    """A fine-tuned model in the registry: its files in the models bucket, metrics and latest evaluation."""

    class Type(models.TextChoices):
        LORA = "lora"
        GGUF = "gguf"
        MERGED = "merged"
        FULL = "full"

    class Status(models.TextChoices):
        PENDING = "pending"
        UPLOADING = "uploading"
        READY = "ready"
        FAILED = "failed"
        ARCHIVED = "archived"

    class DeployStatus(models.TextChoices):
        IDLE = "idle"
        DEPLOYING = "deploying"
        DEPLOYED = "deployed"
        FAILED = "failed"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="registered_models")
    name = models.CharField(max_length=255)
    description = models.TextField(blank=True)
    base_model = models.CharField(max_length=200, db_index=True)
    type = models.CharField(max_length=20, choices=Type.choices, default=Type.LORA)
    # At most one model per job: the database enforces exactly-once auto-creation.
    job = models.OneToOneField(
        "jobs.Job", on_delete=models.SET_NULL, null=True, blank=True, related_name="registered_model"
    )
    storage_path = models.CharField(max_length=500, blank=True)
    lora_adapters_path = models.CharField(max_length=500, blank=True)
    gguf_path = models.CharField(max_length=500, blank=True)
    files = models.JSONField(default=list, blank=True)  # [{path, size, sha256, crc32, content_type, kind}]
    training_metrics = models.JSONField(default=dict, blank=True)
    eval_results = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING, db_index=True)
    total_size = models.BigIntegerField(default=0)
    # The registered name this model is a version of; versions count 1, 2, … per name, never reused.
    # Null only for rows written directly (tests, legacy imports): the services always set both.
    registered_name = models.ForeignKey(
        "models_app.RegisteredName", on_delete=models.PROTECT, null=True, blank=True, related_name="versions"
    )
    version = models.PositiveIntegerField(null=True, blank=True)
    # Where the model came from, captured from its job when it is registered (the job's dataset may go later).
    provenance = models.JSONField(default=dict, blank=True)
    # Ollama, two records that a failed redeploy must not blur into one:
    # the live deployment (the last successful deploy, what Ollama serves and evaluations default to) ...
    ollama_name = models.CharField(max_length=200, blank=True)
    ollama_base = models.CharField(max_length=200, blank=True)
    ollama_digest = models.CharField(max_length=100, blank=True)
    deployed_at = models.DateTimeField(null=True, blank=True)
    # blobs, template, smoke answer of that deploy, and `checked`: whether Ollama still served it when last asked
    live_deploy_details = models.JSONField(default=dict, blank=True)
    # A parity check's verdict on the live deployment (digest, drifted, figures); cleared when the digest changes.
    deploy_parity = models.JSONField(default=dict, blank=True)
    # ... and the last attempt: its status, error, times, and its details (target, base, then the result).
    deploy_status = models.CharField(max_length=20, choices=DeployStatus.choices, default=DeployStatus.IDLE)
    deploy_error = models.TextField(blank=True)
    deploy_started_at = models.DateTimeField(null=True, blank=True)
    deploy_finished_at = models.DateTimeField(null=True, blank=True)
    deploy_details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "models"
        verbose_name = "model"
        ordering = ["-created_at", "-id"]
        indexes = [
            # The default order with its tie-break: deep pages read only this index (see ModelPagination).
            models.Index(fields=["owner", "-created_at", "-id"], name="models_owner_created_id_idx"),
            models.Index(fields=["owner", "status"]),
            # ?ordering=-total_size (largest first), per owner and staff-wide; name/description search
            # has PostgreSQL trigram indexes (migration 0004), which other databases cannot build.
            models.Index(fields=["owner", "-total_size", "-id"], name="models_owner_size_idx"),
            models.Index(fields=["-total_size", "-id"], name="models_size_idx"),
            # The list's base_model filter and the staff-wide list (all owners, newest first).
            models.Index(fields=["owner", "base_model", "-created_at"], name="models_owner_base_created_idx"),
            models.Index(fields=["-created_at", "-id"], name="models_created_id_idx"),
        ]
        constraints = [
            models.CheckConstraint(condition=models.Q(total_size__gte=0), name="models_total_size_not_negative"),
            # One Ollama name, one registered model: a deploy never silently takes over another model's name.
            models.UniqueConstraint(
                fields=["ollama_name"], condition=~models.Q(ollama_name=""), name="models_ollama_name_unique"
            ),
            # Version numbers of one name are unique (the counter on RegisteredName hands them out).
            models.UniqueConstraint(fields=["registered_name", "version"], name="models_name_version_unique"),
            models.CheckConstraint(
                condition=models.Q(registered_name__isnull=True, version__isnull=True)
                | models.Q(registered_name__isnull=False, version__gte=1),
                name="models_version_with_name",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def file_key(self, path: str) -> str:
        """The object key of a manifest path: every file lives under the model's storage prefix."""
        return self.storage_path + path

    @property
    def loss_history(self) -> list:
        return (self.training_metrics or {}).get("loss_history") or []

    @property
    def final_metrics(self) -> dict:
        return (self.training_metrics or {}).get("final") or {}


class RegisteredName(models.Model):
    """A named model owned by a user (``contracts``): its versions are RegisteredModel rows.

    ``last_version`` is the counter versions are taken from, under a row lock: numbers follow
    creation order and are never reused, even after a version is deleted.
    """

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="registered_names")
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    last_version = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "registered_names"
        ordering = ["name", "id"]
        constraints = [models.UniqueConstraint(fields=["owner", "name"], name="registered_names_owner_name_unique")]

    def __str__(self) -> str:
        return self.name


class ModelAlias(models.Model):
    """A movable pointer from a name to one of its versions (``champion`` → v3). Integrations resolve it.

    Moves go through ``registry.alias_move`` only: the row is locked, a stale ``from_version`` is
    refused, the gate (if the alias has one) is checked, and every move is kept as an AliasEvent.
    """

    registered_name = models.ForeignKey(RegisteredName, on_delete=models.CASCADE, related_name="aliases")
    alias = models.CharField(max_length=50)
    # Null once the version it pointed to is deleted: resolving it then says so.
    model = models.ForeignKey(RegisteredModel, on_delete=models.SET_NULL, null=True, blank=True, related_name="aliases")
    moved_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    moved_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "registered_name_aliases"
        ordering = ["alias"]
        constraints = [
            models.UniqueConstraint(fields=["registered_name", "alias"], name="registered_name_alias_unique")
        ]

    def __str__(self) -> str:
        return f"{self.registered_name_id}@{self.alias}"


class AliasEvent(models.Model):
    """One move of an alias: who, when, from which version to which, the evidence, an override's reason."""

    registered_name = models.ForeignKey(RegisteredName, on_delete=models.CASCADE, related_name="alias_events")
    alias = models.CharField(max_length=50)
    from_version = models.PositiveIntegerField(null=True, blank=True)
    to_version = models.PositiveIntegerField()
    moved_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    moved_at = models.DateTimeField(auto_now_add=True)
    evidence = models.JSONField(default=dict, blank=True)
    override_reason = models.TextField(blank=True)

    class Meta:
        db_table = "registered_name_alias_events"
        ordering = ["-moved_at", "-id"]
        indexes = [models.Index(fields=["registered_name", "alias", "-moved_at"], name="alias_events_name_alias_idx")]

    def __str__(self) -> str:
        return f"{self.alias}: v{self.from_version} → v{self.to_version}"


class PromotionGate(models.Model):
    """What moving the gated alias needs: a completed evaluation of the new version against the current
    holder (the base when there is none) on ``test_set_path`` through ``endpoint``, whose improvement of
    ``metric`` has a 95 % CI lower bound above ``threshold``. The metric decides the task of that evaluation
    (``finetune_studio.records.METRICS_BY_TASK``): a classification for accuracy and macro-F1, a generation
    for exact match, token F1, ROUGE-L and chrF."""

    class Metric(models.TextChoices):
        ACCURACY = "accuracy"
        F1_MACRO = "f1_macro"
        EXACT_MATCH = "exact_match"
        TOKEN_F1 = "token_f1"
        ROUGE_L = "rouge_l"
        CHRF = "chrf"

    registered_name = models.OneToOneField(RegisteredName, on_delete=models.CASCADE, related_name="gate")
    alias = models.CharField(max_length=50, default="champion")
    test_set_path = models.CharField(max_length=500)
    metric = models.CharField(max_length=20, choices=Metric.choices, default=Metric.ACCURACY)
    endpoint = models.CharField(max_length=100, default="ollama")
    threshold = models.FloatField(default=0.0)
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "registered_name_gates"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(threshold__gte=-1.0, threshold__lte=1.0), name="gate_threshold_in_range"
            )
        ]

    def __str__(self) -> str:
        return f"gate of {self.registered_name_id} on {self.alias}"
