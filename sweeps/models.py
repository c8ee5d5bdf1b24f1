from django.conf import settings
from django.db import models


class Sweep(models.Model):
    """A queue of training configurations that feeds evaluation: its trials are ordinary jobs and evaluations.

    Only ``status`` (running → completed | cancelled) is the sweep's own; where each trial stands is
    read from its job and evaluation rows (with their leases), so a killed worker loses nothing:
    ``sweep_advance`` looks again and carries on.
    """

    class Strategy(models.TextChoices):
        GRID = "grid"
        RANDOM = "random"

    class Status(models.TextChoices):
        RUNNING = "running"
        COMPLETED = "completed"
        CANCELLED = "cancelled"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sweeps")
    name = models.CharField(max_length=200)
    trainer = models.ForeignKey("jobs.Trainer", on_delete=models.PROTECT, related_name="sweeps")
    dataset = models.ForeignKey("jobs.Dataset", on_delete=models.SET_NULL, null=True, blank=True)
    # Every trial validates on these records (for trainers that take a validation dataset); null: each holds out
    # its own. ``validation_dataset_name`` remembers it: a trial is not started on other records once it is deleted.
    validation_dataset = models.ForeignKey(
        "jobs.Dataset", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    validation_dataset_name = models.CharField(max_length=200, blank=True, default="")
    # The registry version every trial trains further (trainers that take an initial adapter); null: new adapters.
    # ``initial_model_name`` remembers it: no trial starts from scratch instead once it is deleted.
    initial_model = models.ForeignKey(
        "models_app.RegisteredModel", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    initial_model_name = models.CharField(max_length=200, blank=True, default="")
    base_model = models.CharField(max_length=200)
    # The registered name every trial's model becomes a version of.
    registered_name = models.CharField(max_length=100)
    strategy = models.CharField(max_length=10, choices=Strategy.choices)
    search_space = models.JSONField(default=dict)
    seed = models.BigIntegerField(null=True, blank=True)
    n_trials = models.PositiveIntegerField()
    concurrency = models.PositiveIntegerField(default=1)
    test_set_path = models.CharField(max_length=500)
    endpoint = models.CharField(max_length=100, default="ollama")
    # The Ollama name of the base each trial is evaluated against (default: base_model).
    evaluation_base = models.CharField(max_length=200)
    metric = models.CharField(max_length=20, default="accuracy")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.RUNNING, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "sweeps"
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["owner", "-created_at"])]
        constraints = [
            models.CheckConstraint(condition=models.Q(concurrency__gte=1), name="sweep_concurrency_positive")
        ]

    def __str__(self) -> str:
        return self.name


class SweepTrial(models.Model):
    """One configuration of a sweep: its job once started, the job's model, and that model's evaluation."""

    sweep = models.ForeignKey(Sweep, on_delete=models.CASCADE, related_name="trials")
    index = models.PositiveIntegerField()
    hyperparameters = models.JSONField(default=dict)
    job = models.OneToOneField("jobs.Job", on_delete=models.SET_NULL, null=True, blank=True, related_name="sweep_trial")
    model = models.ForeignKey("models_app.RegisteredModel", on_delete=models.SET_NULL, null=True, blank=True)
    evaluation = models.ForeignKey("evaluations.Evaluation", on_delete=models.SET_NULL, null=True, blank=True)
    # Against the name's champion when there was one (the evidence its gate asks for before a promotion).
    champion_evaluation = models.ForeignKey(
        "evaluations.Evaluation", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    error = models.TextField(blank=True)

    class Meta:
        db_table = "sweep_trials"
        ordering = ["sweep", "index"]
        constraints = [models.UniqueConstraint(fields=["sweep", "index"], name="sweep_trial_unique_index")]

    def __str__(self) -> str:
        return f"{self.sweep_id}#{self.index}"
