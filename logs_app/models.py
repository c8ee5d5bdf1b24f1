from django.db import models


class LogEntry(models.Model):
    """One log line of a job. ``seq`` increases strictly per job; (job, seq) is unique."""

    class Level(models.TextChoices):
        DEBUG = "DEBUG"
        INFO = "INFO"
        WARN = "WARN"
        ERROR = "ERROR"

    # No index and no database constraint of its own, for ingestion speed (see migration 0003): the
    # (job, seq) index serves lookups by job, and writers lock the job row as the constraint would.
    job = models.ForeignKey(
        "jobs.Job", on_delete=models.CASCADE, related_name="log_entries", db_index=False, db_constraint=False
    )
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


class LogStream(models.Model):
    """The log of one job as a whole: its sequence counter, its totals and, once archived, where it went.

    ``last_seq`` is moved only by an UPDATE that holds this row's lock until commit, so two
    writers to one job get disjoint, increasing seq ranges and commit in allocation order.
    After archiving, the job's rows live in one gzip object (``archive_key``) and appends are refused.
    """

    job = models.OneToOneField("jobs.Job", on_delete=models.CASCADE, primary_key=True, related_name="log_stream")
    last_seq = models.BigIntegerField(default=0)
    line_count = models.BigIntegerField(default=0)
    warn_count = models.BigIntegerField(default=0)
    error_count = models.BigIntegerField(default=0)
    archived_at = models.DateTimeField(null=True, blank=True)
    archive_key = models.CharField(max_length=500, blank=True)
    archive_size = models.BigIntegerField(default=0)
    archive_sha256 = models.CharField(max_length=64, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "log_streams"
        constraints = [
            models.CheckConstraint(condition=models.Q(last_seq__gte=0), name="log_stream_last_seq_not_negative"),
            models.CheckConstraint(
                condition=models.Q(archived_at__isnull=True) | ~models.Q(archive_key=""),
                name="log_stream_archive_has_key",
            ),
        ]

    def __str__(self) -> str:
        return f"log of job #{self.job_id} ({self.line_count} lines)"

    @property
    def is_archived(self) -> bool:
        return self.archived_at is not None

    def totals(self) -> dict:
        return {"lines": self.line_count, "warnings": self.warn_count, "errors": self.error_count}


class LogCursor(models.Model):
    """How far the aggregator has read one log object an external trainer writes (bytes of complete lines)."""

    job = models.ForeignKey("jobs.Job", on_delete=models.CASCADE, related_name="log_cursors")
    key = models.CharField(max_length=500)
    offset = models.BigIntegerField(default=0)
    lines_read = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "log_cursors"
        ordering = ["job", "key"]
        constraints = [
            models.UniqueConstraint(fields=["job", "key"], name="log_cursor_unique_job_key"),
            models.CheckConstraint(condition=models.Q(offset__gte=0), name="log_cursor_offset_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.key} @ {self.offset}"
