"""What the dashboard shows, all scoped to the user (staff: everyone). A fixed number of queries."""

from django.db.models import Count, Q, Sum

from .ownership import visible_to


def dashboard_context(user) -> dict:
    from evaluations.models import Evaluation
    from jobs.models import Dataset, Job
    from models_app.models import RegisteredModel

    jobs = visible_to(Job.objects.all(), user)
    models = visible_to(RegisteredModel.objects.all(), user)
    evaluations = visible_to(Evaluation.objects.all(), user)
    datasets = visible_to(Dataset.objects.all(), user)

    status_counts = dict(jobs.order_by().values_list("status").annotate(n=Count("id")))
    return {
        "job_status_counts": [(status, label, status_counts.get(status, 0)) for status, label in Job.Status.choices],
        "running_jobs": jobs.filter(status=Job.Status.RUNNING).select_related("trainer").order_by("started_at")[:10],
        "recent_models": models.exclude(status=RegisteredModel.Status.ARCHIVED)[:6],
        "recent_evaluations": evaluations.select_related("model")[:6],
        "failed_jobs": jobs.filter(status=Job.Status.FAILED).order_by("-finished_at")[:5],
        "failed_evaluations": evaluations.filter(status=Evaluation.Status.FAILED)[:5],
        "storage": _storage_used(datasets, models, jobs),
        "has_anything": bool(status_counts) or datasets.exists(),
    }


def _storage_used(datasets, models, jobs) -> list[tuple[str, int, str]]:
    """(bucket, bytes, what) from what the database knows: no bucket listing on a page load."""
    from logs_app.models import LogStream

    dataset_totals = datasets.aggregate(size=Sum("size_bytes"), n=Count("id"))
    model_totals = models.aggregate(size=Sum("total_size"), n=Count("id", filter=~Q(total_size=0)))
    log_totals = LogStream.objects.filter(job__in=jobs).aggregate(
        archived=Sum("archive_size"),
        archives=Count("job", filter=Q(archived_at__isnull=False)),
        lines=Sum("line_count"),
    )
    return [
        ("datasets", dataset_totals["size"] or 0, _count(dataset_totals["n"], "dataset")),
        ("models", model_totals["size"] or 0, _count(model_totals["n"], "model")),
        (
            "logs",
            log_totals["archived"] or 0,
            f"{_count(log_totals['archives'], 'archived log')}, {_count(log_totals['lines'] or 0, 'live line')}",
        ),
    ]


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
