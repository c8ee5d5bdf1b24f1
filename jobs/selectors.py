"""Permission-aware reads of the jobs app."""

import importlib.util

from django.db.models import QuerySet

from finetune_studio import base_models
from finetune_studio.ownership import visible_to

from .models import Dataset, Job, JobMetric, Trainer


def trainer_availability(trainer: Trainer) -> tuple[bool, str]:
    """(available, reason when not): disabled by an operator, or Python modules missing on this machine."""
    if not trainer.enabled:
        return False, "disabled by an operator"
    missing = []
    for module in trainer.required_modules or []:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(module)
    if missing:
        return False, f"needs Python modules not installed here: {', '.join(missing)}"
    return True, ""


def trainers_with_availability() -> list[tuple[Trainer, bool, str]]:
    return [(trainer, *trainer_availability(trainer)) for trainer in Trainer.objects.all()]


def base_models_catalogue() -> list[dict]:
    """The catalogue as pages and the API show it: each base described, with the trainers' presets for it."""
    trainers = list(Trainer.objects.exclude(presets={}))
    return [
        {
            **base_models.base_model_describe(entry),
            "presets": {
                trainer.name: trainer.presets[entry.name] for trainer in trainers if entry.name in trainer.presets
            },
        }
        for entry in base_models.base_model_catalogue()
    ]


def dataset_list(*, user) -> QuerySet[Dataset]:
    return visible_to(Dataset.objects.all(), user)


def job_list(*, user) -> QuerySet[Job]:
    return visible_to(Job.objects.select_related("trainer", "dataset", "registered_model"), user)


def job_metric_points(*, job: Job, limit: int = 5000) -> list[dict]:
    """The chart's points, oldest first; long runs keep every n-th point so the page stays light."""
    total = JobMetric.objects.filter(job=job).count()
    stride = max(1, -(-total // limit))
    points = JobMetric.objects.filter(job=job).order_by("step").values_list("data", flat=True)
    if stride == 1:
        return list(points)
    return [point for index, point in enumerate(points.iterator()) if index % stride == 0]


def job_registered_model(job: Job):
    try:
        return job.registered_model
    except Job.registered_model.RelatedObjectDoesNotExist:
        return None
