from django.conf import settings
from django.db import models


class Evaluation(models.Model):
    """Base vs fine-tuned comparison on a test set through Ollama; status and progress are ours."""

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        COMPLETED = "completed"
        FAILED = "failed"
        CANCELLED = "cancelled"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="evaluations")
    model = models.ForeignKey(
        "models_app.RegisteredModel", on_delete=models.CASCADE, null=True, blank=True, related_name="evaluations"
    )
    job = models.ForeignKey("jobs.Job", on_delete=models.SET_NULL, null=True, blank=True, related_name="evaluations")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING, db_index=True)
    test_set_path = models.CharField(max_length=500)
    base_model_name = models.CharField(max_length=200)
    fine_tuned_name = models.CharField(max_length=200, blank=True)
    config = models.JSONField(default=dict, blank=True)
    progress = models.JSONField(default=dict, blank=True)  # {"done": n, "total": m}
    results = models.JSONField(default=dict, blank=True)
    examples = models.JSONField(default=list, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    error_message = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "evaluations"
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["owner", "status", "-created_at"])]

    def __str__(self) -> str:
        return f"Evaluation #{self.pk} of {self.fine_tuned_name or self.model_id}"
