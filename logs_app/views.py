from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.views.decorators.http import require_GET

from jobs.selectors import job_get


@require_GET
@login_required
def job_logs(request, pk: int):
    """The full-page logs viewer of one job (live, filterable, with older lines on demand)."""
    job = job_get(user=request.user, job_id=pk)
    return render(request, "logs_app/job_logs.html", {"job": job})
