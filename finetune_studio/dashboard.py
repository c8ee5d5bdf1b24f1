"""What the dashboard shows: counts and recent items, all scoped to the user (staff: everyone)."""

from django.db.models import Count

from .ownership import visible_to


def dashboard_context(user) -> dict:
    from evaluations.models import Evaluation
    from jobs.models import Job
    from models_app.models import RegisteredModel

    jobs = visible_to(Job.objects.all(), user)
    status_counts = dict(jobs.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
    return {
        "job_status_counts": [(status, status_counts.get(status, 0)) for status in Job.Status.values],
        "running_jobs": jobs.filter(status=Job.Status.RUNNING).select_related("trainer")[:10],
        "failed_jobs": jobs.filter(status=Job.Status.FAILED)[:5],
        "recent_models": visible_to(RegisteredModel.objects.all(), user)[:5],
        "recent_evaluations": visible_to(Evaluation.objects.all(), user).select_related("model")[:5],
    }
