from django.conf import settings
from django.db import models


class Evaluation(models.Model):
    """Base vs fine-tuned on a test set, each candidate asked on an inference endpoint; status and progress are ours.

    Status moves only by conditional UPDATE (see services). A worker holds a running
    evaluation by renewing ``heartbeat_at``; one whose heartbeat is older than the lease
    has lost its worker and may be claimed again, resuming after the stored predictions.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        COMPLETED = "completed"
        FAILED = "failed"
        CANCELLED = "cancelled"

    UNFINISHED = (Status.PENDING, Status.RUNNING)

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="evaluations")
    model = models.ForeignKey(
        "models_app.RegisteredModel", on_delete=models.CASCADE, null=True, blank=True, related_name="evaluations"
    )
    job = models.ForeignKey("jobs.Job", on_delete=models.SET_NULL, null=True, blank=True, related_name="evaluations")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING, db_index=True)
    test_set_path = models.CharField(max_length=500)
    base_model_name = models.CharField(max_length=200)
    fine_tuned_name = models.CharField(max_length=200, blank=True)
    # What users may edit afterwards (PUT): a name and a note. Never the results.
    name = models.CharField(max_length=200, blank=True)
    note = models.TextField(blank=True)
    config = models.JSONField(default=dict, blank=True)
    progress = models.JSONField(default=dict, blank=True)  # {"done": n, "total": m}
    results = models.JSONField(default=dict, blank=True)
    examples = models.JSONField(default=list, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # Runs started, in all (shown to users; a retry keeps counting). The lost-worker budget is
    # ``attempts_since_retry``: claims since the owner started or last retried it.
    attempts = models.PositiveIntegerField(default=0)
    attempts_since_retry = models.PositiveIntegerField(default=0)
    error_message = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "evaluations"
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["owner", "status", "-created_at"]),
            models.Index(fields=["status", "heartbeat_at"], name="evaluations_status_beat_idx"),
        ]

    def __str__(self) -> str:
        return self.name or f"Evaluation #{self.pk} of {self.fine_tuned_name or self.model_id}"

    @property
    def candidates(self) -> list[str]:
        """Model names asked, the base first (the seed's pair, or more fine-tuned models)."""
        fine_tuned = self.config.get("fine_tuned_names") or ([self.fine_tuned_name] if self.fine_tuned_name else [])
        return [self.base_model_name, *fine_tuned]

    @property
    def candidate_plans(self) -> list[dict]:
        """Each candidate's name, role, endpoint and source (``named`` or ``registry_adapter``), the base first.

        Evaluations queued before endpoints existed ran everything on Ollama: they read as the ``ollama`` endpoint.
        """
        plans = (self.config or {}).get("candidates")
        if plans:
            return plans
        return [
            {"name": name, "role": "fine_tuned" if position else "base", "endpoint": "ollama", "source": "named"}
            for position, name in enumerate(self.candidates)
        ]

    @property
    def base_endpoint(self) -> str:
        return self.candidate_plans[0]["endpoint"]

    @property
    def fine_tuned_endpoint(self) -> str:
        plans = self.candidate_plans
        return plans[1]["endpoint"] if len(plans) > 1 else plans[0]["endpoint"]

    @property
    def is_finished(self) -> bool:
        return self.status not in self.UNFINISHED

    @property
    def percent(self) -> int:
        total = (self.progress or {}).get("total") or 0
        return int(100 * (self.progress.get("done") or 0) / total) if total else 0


class Prediction(models.Model):
    """One candidate's answer to one test example: every answer is kept, so re-analysis never re-runs."""

    evaluation = models.ForeignKey(Evaluation, on_delete=models.CASCADE, related_name="predictions")
    index = models.PositiveIntegerField()  # position of the example in the test set
    candidate = models.CharField(max_length=200)  # the candidate's name (see Evaluation.candidate_plans)
    input_text = models.TextField()
    expected = models.TextField()  # the label, or a generation's reference answer (any length)
    prediction_text = models.TextField(blank=True)
    parsed_label = models.CharField(max_length=500, null=True, blank=True)  # null: unparseable
    correct = models.BooleanField(default=False)
    latency_ms = models.FloatField(null=True, blank=True)
    eval_count = models.IntegerField(null=True, blank=True)
    eval_duration_ns = models.BigIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    # A generation's per-example metric scores ({"exact_match": 1.0, "chrf": 0.83, …}), scored as the answer
    # arrived: results and re-analysis read them, never the endpoint again. Empty for classification.
    scores = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "evaluation_predictions"
        ordering = ["evaluation", "index", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["evaluation", "index", "candidate"], name="evaluation_prediction_unique_example_candidate"
            )
        ]

    def __str__(self) -> str:
        return f"evaluation {self.evaluation_id} #{self.index} {self.candidate}"


class JudgeAnswer(models.Model):
    """A judge's answer to one filled-in judge prompt, kept so a re-run (or re-analysis) does not pay twice.

    ``key`` is the SHA-256 of (judge endpoint, judge model, the full prompt sent, which holds the question,
    the reference and both answers in their order). Per owner: a cache shared across users would tell one
    user, by its speed, what another had asked.
    """

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="judge_answers")
    key = models.CharField(max_length=64)
    endpoint = models.CharField(max_length=100)
    judge_model = models.CharField(max_length=200)
    winner = models.CharField(max_length=4)  # "A", "B", "tie", or "none" when the answer named no winner
    reason = models.TextField(blank=True)
    content = models.TextField(blank=True)  # the judge's answer as it came
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "evaluation_judge_answers"
        constraints = [models.UniqueConstraint(fields=["owner", "key"], name="judge_answer_unique_owner_key")]

    def __str__(self) -> str:
        return f"{self.judge_model}@{self.endpoint}: {self.winner}"


class ChatUsage(models.Model):
    """How much one model was asked, per owner, day and way in: counts and tokens only, never what was said.

    One row per (owner, the name asked, day, source), counted up by ``chat.chat_usage_record`` after each answer
    (or failure) of the OpenAI-compatible chat completions and responses (``api``) and the model page's Chat
    (``page``). ``model`` is the registry version (null for a base, or once the version is deleted: the name stays).
    """

    class Source(models.TextChoices):
        API = "api", "OpenAI-compatible API"
        PAGE = "page", "model page"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_usage")
    model = models.ForeignKey(
        "models_app.RegisteredModel", on_delete=models.SET_NULL, null=True, blank=True, related_name="chat_usage"
    )
    model_name = models.CharField(max_length=255)
    day = models.DateField()
    source = models.CharField(max_length=10, choices=Source.choices)
    requests = models.PositiveIntegerField(default=0)
    failures = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)

    class Meta:
        db_table = "evaluation_chat_usage"
        verbose_name_plural = "chat usage"
        ordering = ["-day", "model_name"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "model_name", "day", "source"], name="chat_usage_unique_day")
        ]

    def __str__(self) -> str:
        return f"{self.model_name} on {self.day}: {self.requests} ({self.source})"
