from django.db import models


class LogEntry(models.Model):
    """One log line of a job. ``seq`` increases strictly per job; (job, seq) is unique."""

    class Level(models.TextChoices):
        DEBUG = "DEBUG"
        INFO = "INFO"
        WARN = "WARN"
        ERROR = "ERROR"

    job = models.ForeignKey("jobs.Job", on_delete=models.CASCADE, related_name="log_entries")
    seq = models.BigIntegerField()
    timestamp = models.DateTimeField()
    level = models.CharField(max_length=5, choices=Level.choices, default=Level.INFO)
    message = models.TextField()
    source = models.CharField(max_length=50, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "log_entries"
        ordering = ["job", "seq"]
        constraints = [models.UniqueConstraint(fields=["job", "seq"], name="log_entry_unique_job_seq")]

    def __str__(self) -> str:
        return f"[{self.timestamp:%H:%M:%S}] [{self.level}] {self.message}"
