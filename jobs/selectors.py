"""Permission-aware reads of the jobs app."""

import importlib.util
from typing import NamedTuple

from django.db.models import Count, QuerySet, Sum

from finetune_studio import base_models
from finetune_studio.errors import DomainNotFound
from finetune_studio.ownership import visible_to
from finetune_studio.records import metric_for_test_set

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


class JobsNotFound(DomainNotFound):
    """No such job or dataset among those the user may see."""


class DatasetTotals(NamedTuple):
    size: int
    count: int


def jobs_visible(*, user) -> QuerySet[Job]:
    """The jobs the user may see (their own; staff: all), with what the pages show of each."""
    return visible_to(Job.objects.select_related("trainer", "dataset", "registered_model"), user)


def job_get(*, user, job_id: int) -> Job:
    """The job if the user may see it, else JobsNotFound (a 404: others never learn it exists)."""
    job = jobs_visible(user=user).filter(id=job_id).first()
    if job is None:
        raise JobsNotFound("No such job.")
    return job


def datasets_visible(*, user) -> QuerySet[Dataset]:
    return visible_to(Dataset.objects.all(), user)


def dataset_get(*, user, dataset_id: int) -> Dataset:
    """The dataset if the user may see it, else JobsNotFound."""
    dataset = datasets_visible(user=user).filter(id=dataset_id).first()
    if dataset is None:
        raise JobsNotFound("No such dataset.")
    return dataset


def job_status_counts(*, user) -> list[tuple[str, str, int]]:
    """(status, label, jobs) for every status, in the order of ``Job.Status``: one query."""
    counts = dict(jobs_visible(user=user).order_by().values_list("status").annotate(n=Count("id")))
    return [(status, label, counts.get(status, 0)) for status, label in Job.Status.choices]


def jobs_running(*, user, limit: int) -> QuerySet[Job]:
    running = jobs_visible(user=user).filter(status=Job.Status.RUNNING)
    return running.select_related("trainer").order_by("started_at")[:limit]


def jobs_failed_recently(*, user, limit: int) -> QuerySet[Job]:
    return jobs_visible(user=user).filter(status=Job.Status.FAILED).order_by("-finished_at")[:limit]


def dataset_metric(metric: str | None, *, dataset: Dataset | None) -> str:
    """``records.metric_for_test_set`` for a test set that is ``dataset`` (None: a path with no dataset row, read
    only when evaluated): the metric a gate or a sweep on it compares by. ValueError for an unknown name."""
    if dataset is None:
        return metric_for_test_set(metric, task=None)
    return metric_for_test_set(
        metric, task=dataset.task, records=dataset.records, tool_call_answers=dataset.tool_call_answers
    )


def dataset_totals(*, user) -> DatasetTotals:
    totals = datasets_visible(user=user).aggregate(size=Sum("size_bytes"), n=Count("id"))
    return DatasetTotals(size=totals["size"] or 0, count=totals["n"])


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
