from django.conf import settings
from django.db import models


class Dataset(models.Model):
    """A training or test set uploaded by a user, validated and summarised at upload.

    ``file_format`` is how the file is encoded; ``format`` is the shape of its records (one per file) and
    ``task`` follows from it: only text/label records are classification data with ``labels``.
    """

    class FileFormat(models.TextChoices):
        JSON = "json", "JSON array"
        JSONL = "jsonl", "JSON lines"
        CSV = "csv", "CSV"

    class Format(models.TextChoices):
        OPENAI_CHAT = "openai_chat", "OpenAI chat"
        SHAREGPT = "sharegpt", "ShareGPT"
        ALPACA = "alpaca", "Alpaca"
        PROMPT_COMPLETION = "prompt_completion", "prompt/completion"
        TEXT_LABEL = "text_label", "text/label"
        PREFERENCE = "preference", "preference (DPO)"
        # Uploaded before record formats were detected: ``manage.py dataset_detect_formats`` reads them again.
        UNKNOWN = "", "not detected"

    class Task(models.TextChoices):
        CLASSIFICATION = "classification"
        GENERATION = "generation"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="datasets")
    name = models.CharField(max_length=200)
    # Storage path as the API shows it ("datasets/users/<id>/…"); evaluations accept it as test_set_path.
    path = models.CharField(max_length=500, unique=True)
    original_filename = models.CharField(max_length=255, blank=True)
    file_format = models.CharField(max_length=10, choices=FileFormat.choices)
    format = models.CharField(max_length=20, choices=Format.choices, blank=True, default="")
    task = models.CharField(max_length=20, choices=Task.choices, default=Task.CLASSIFICATION)
    size_bytes = models.BigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True)
    records = models.PositiveIntegerField(default=0)
    labels = models.JSONField(default=list, blank=True)
    label_counts = models.JSONField(default=dict, blank=True)
    # Tool calling (OpenAI chat records): the function names the records define, sorted and distinct, and how
    # many records are answered by a call. A test set mostly answered by calls is compared by exact_match.
    tools = models.JSONField(default=list, blank=True)
    tool_call_answers = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["owner", "-created_at"])]

    def __str__(self) -> str:
        return self.name


class Trainer(models.Model):
    """A training program defined by operators. ``external`` runs nothing here: a remote runner reports."""

    EXTERNAL = "external"

    name = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    # Argument list, never a shell string: hyperparameters reach the process as a JSON file and env vars.
    command = models.JSONField(default=list, blank=True)
    # {"epochs": {"type": "integer", "default": 3, "minimum": 1, "maximum": 100, "help": "…"}, …}
    hyperparameter_schema = models.JSONField(default=dict, blank=True)
    # Importable module names the trainer needs (torch, peft…); missing ones make it unavailable, with the reason.
    required_modules = models.JSONField(default=list, blank=True)
    # The trainer loads BASE_MODEL (lora-sft): the base must be in the catalogue or inside an allowed folder
    # (finetune_studio/base_models.py). Off: the name is only recorded, and a path is still checked.
    loads_base_model = models.BooleanField(default=True)
    # {"<base model name>": {"epochs": 20, …}}: hyperparameters that suit one base, chosen for it by default.
    presets = models.JSONField(default=dict, blank=True)
    # The trainer reads VALIDATION_DATASET_PATH (lora-sft): a job may name a validation dataset of its own.
    takes_validation_dataset = models.BooleanField(default=False)
    # The record formats (Dataset.Format) its datasets may hold, e.g. ["preference"] for lora-dpo; empty: any.
    record_formats = models.JSONField(default=list, blank=True)
    # The trainer reads INITIAL_ADAPTER_PATH (lora-sft, lora-dpo): a job may train a registry version further.
    takes_initial_adapter = models.BooleanField(default=False)
    queue = models.CharField(max_length=50, default="training")
    timeout_seconds = models.PositiveIntegerField(default=6 * 3600)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_external(self) -> bool:
        return self.name == self.EXTERNAL

    def takes_format(self, record_format: str) -> bool:
        return not self.record_formats or record_format in self.record_formats

    def record_formats_display(self) -> str:
        """What its datasets must hold, in words ("preference (DPO) records"); "" when any format will do."""
        labels = dict(Dataset.Format.choices)
        return " or ".join(str(labels.get(name, name)) for name in self.record_formats or ())


class Job(models.Model):
    """A training run. Its status is ours (not Celery's) and moves only by conditional UPDATE."""

    class Status(models.TextChoices):
        PENDING = "pending"
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="jobs")
    name = models.CharField(max_length=200)
    base_model = models.CharField(max_length=200)
    # The base whose preset (Trainer.presets) the hyperparameters hold, "" when they are the user's own.
    preset = models.CharField(max_length=200, blank=True, default="")
    dataset = models.ForeignKey(Dataset, on_delete=models.SET_NULL, null=True, blank=True, related_name="jobs")
    # Held out instead of a share of ``dataset`` (trainers that take one); null: the trainer's own split.
    validation_dataset = models.ForeignKey(
        Dataset, on_delete=models.SET_NULL, null=True, blank=True, related_name="validation_jobs"
    )
    trainer = models.ForeignKey(Trainer, on_delete=models.PROTECT, related_name="jobs")
    hyperparameters = models.JSONField(default=dict, blank=True)
    # The registry version this job trains further (trainers that take an initial adapter), as resolved when the
    # job was created: {"model_id", "name", "files": [{"path", "key", "sha256"}]} (the adapter's files in the
    # models bucket); {} for a new adapter. The registry refuses to delete that version while the job is unfinished.
    initial_adapter = models.JSONField(default=dict, blank=True)
    # The owner's labels, {"key": "value"} (at most 16; OpenAI's metadata): jobs are listed by them.
    metadata = models.JSONField(default=dict, blank=True)
    # The registered name (models_app) its model joins as the next version; blank: derived from the job's name.
    registered_name = models.CharField(max_length=100, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING, db_index=True)
    # Where artifacts (models bucket) and log chunks (logs bucket) of this job live.
    storage_prefix = models.CharField(max_length=300, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    error_message = models.TextField(blank=True)
    progress = models.JSONField(default=dict, blank=True)  # step, total_steps, epoch, percent, eta_seconds
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Final metrics (metrics.json of the trainer, or what an external runner reported).
    metrics = models.JSONField(default=dict, blank=True)
    # The local runner holding the job ("host:pid:token"); it renews lease_expires_at with each heartbeat.
    # A running job whose lease expired has lost its worker: the sweeper fails it, nobody else runs it.
    lease_owner = models.CharField(max_length=200, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["owner", "status", "-created_at"]),
            models.Index(fields=["status", "lease_expires_at"], name="jobs_job_status_lease_idx"),
        ]
        constraints = [
            # A finished job always says when it finished; an unfinished one never does.
            models.CheckConstraint(
                condition=(
                    models.Q(status__in=["succeeded", "failed", "cancelled"], finished_at__isnull=False)
                    | (~models.Q(status__in=["succeeded", "failed", "cancelled"]) & models.Q(finished_at__isnull=True))
                ),
                name="job_finished_at_matches_status",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} (#{self.pk})"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED


class JobMetric(models.Model):
    """One training-metrics point of a job (a JSON metrics line), kept for the loss chart."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="metric_points")
    step = models.PositiveIntegerField()
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["job", "step"]
        constraints = [models.UniqueConstraint(fields=["job", "step"], name="job_metric_unique_job_step")]

    def __str__(self) -> str:
        return f"job {self.job_id} step {self.step}"
