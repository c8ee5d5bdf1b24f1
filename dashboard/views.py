"""The dashboard: what each app's selectors say about the user's work (staff: everyone's), in a fixed number of queries.

It reads only through selectors, so the apps' tables and their permission rules stay theirs.
"""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from evaluations import selectors as evaluation_selectors
from jobs import selectors as job_selectors
from logs_app import selectors as log_selectors
from models_app import selectors as model_selectors


@login_required
def dashboard(request):
    return render(request, "dashboard/dashboard.html", dashboard_context(request.user))


def dashboard_context(user) -> dict:
    status_counts = job_selectors.job_status_counts(user=user)
    datasets = job_selectors.dataset_totals(user=user)
    return {
        "job_status_counts": status_counts,
        "running_jobs": job_selectors.jobs_running(user=user, limit=10),
        "recent_models": model_selectors.models_recent(user=user, limit=6),
        "recent_evaluations": evaluation_selectors.evaluations_recent(user=user, limit=6),
        "failed_jobs": job_selectors.jobs_failed_recently(user=user, limit=5),
        "failed_evaluations": evaluation_selectors.evaluations_failed_recently(user=user, limit=5),
        "storage": _storage_used(user, datasets),
        "has_anything": any(count for _, _, count in status_counts) or datasets.count > 0,
    }


def _storage_used(user, datasets) -> list[tuple[str, int, str]]:
    """(bucket, bytes, what) from what the database knows: no bucket listing on a page load."""
    models = model_selectors.model_totals(user=user)
    logs = log_selectors.log_totals(user=user)
    return [
        ("datasets", datasets.size, _count(datasets.count, "dataset")),
        ("models", models.size, _models_counted(models)),
        ("logs", logs.archived_size, f"{_count(logs.archives, 'archived log')}, {_count(logs.lines, 'live line')}"),
    ]


def _models_counted(models) -> str:
    """Every model is counted; those without files yet say so, since their size is not in the total."""
    text = _count(models.count, "model")
    without_files = models.count - models.with_files
    return f"{text} ({without_files} without files)" if without_files else text


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
