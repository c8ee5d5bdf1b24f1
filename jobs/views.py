"""Server-rendered pages of the jobs app: jobs, the new-job form, datasets."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_http_methods, require_POST

from finetune_studio.api import Conflict
from finetune_studio.objects import StorageError, UploadTooLarge

from . import selectors, services
from .forms import HP_PREFIX, DatasetUploadForm, JobForm
from .models import Job, Trainer
from .uploads import limit_dataset_uploads

PAGE_SIZE = 50


@login_required
def job_list(request):
    jobs = selectors.job_list(user=request.user)
    status = request.GET.get("status", "")
    if status in Job.Status.values:
        jobs = jobs.filter(status=status)
    page = Paginator(jobs, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(
        request,
        "jobs/job_list.html",
        {"page": page, "jobs": page.object_list, "status": status, "statuses": Job.Status},
    )


@login_required
@require_http_methods(["GET", "POST"])
def job_create(request):
    trainer_name = request.POST.get("trainer") if request.method == "POST" else request.GET.get("trainer")
    trainer = _pick_trainer(trainer_name)
    if request.method == "POST":
        form = JobForm(request.POST, user=request.user, trainer=trainer)
        if form.is_valid():
            dataset = form.cleaned_data["dataset"]
            try:
                job = services.job_create(
                    owner=request.user,
                    name=form.cleaned_data["name"],
                    base_model=form.cleaned_data["base_model"],
                    dataset_id=dataset.id if dataset else None,
                    trainer_name=form.cleaned_data["trainer"],
                    hyperparameters_given=form.hyperparameter_values(),
                    registered_name=form.cleaned_data["registered_name"],
                )
            except services.JobInvalid as exc:
                _attach_errors(form, exc.errors)
            except services.JobQueueUnavailable as exc:
                messages.error(request, str(exc))
                return redirect("job-detail", pk=exc.job_id)
            else:
                messages.success(request, f"Job “{job.name}” created: it starts as soon as a worker is free.")
                return redirect("job-detail", pk=job.pk)
    else:
        initial = {"trainer": trainer.name if trainer else None, "dataset": request.GET.get("dataset")}
        form = JobForm(initial=initial, user=request.user, trainer=trainer)
    return render(request, "jobs/job_form.html", {"form": form, "trainer": trainer})


def _pick_trainer(name: str | None) -> Trainer | None:
    if name:
        trainer = Trainer.objects.filter(name=name).first()
        if trainer:
            return trainer
    available = [trainer for trainer, ok, _ in selectors.trainers_with_availability() if ok]
    preferred = [trainer for trainer in available if trainer.name == "example"]
    return (preferred or available or [None])[0]


def _attach_errors(form: JobForm, errors: dict) -> None:
    for field, messages_ in errors.items():
        if field == "hyperparameters" and isinstance(messages_, dict):
            for name, hp_messages in messages_.items():
                target = HP_PREFIX + name if HP_PREFIX + name in form.fields else None
                for message in hp_messages:
                    form.add_error(target, message if target else f"{name}: {message}")
        else:
            for message in messages_ if isinstance(messages_, list) else [str(messages_)]:
                form.add_error(field if field in form.fields else None, message)


@login_required
def job_detail(request, pk: int):
    job = get_object_or_404(selectors.job_list(user=request.user), pk=pk)
    return render(
        request,
        "jobs/job_detail.html",
        {
            "job": job,
            "model": selectors.job_registered_model(job),
            "metric_points": selectors.job_metric_points(job=job),
            "hyperparameters": sorted(job.hyperparameters.items()),
        },
    )


@login_required
@require_POST
def job_cancel(request, pk: int):
    job = get_object_or_404(selectors.job_list(user=request.user), pk=pk)
    try:
        services.job_cancel(job_id=job.id)
    except Conflict as exc:
        messages.error(request, str(exc.detail))
    else:
        messages.success(request, "Job cancelled.")
    return redirect("job-detail", pk=job.pk)


@login_required
@require_POST
def job_delete(request, pk: int):
    job = get_object_or_404(selectors.job_list(user=request.user), pk=pk)
    try:
        services.job_delete(job_id=job.id)
    except Conflict as exc:
        messages.error(request, str(exc.detail))
        return redirect("job-detail", pk=job.pk)
    messages.success(request, f"Job “{job.name}” deleted.")
    return redirect("job-list")


@csrf_exempt
def dataset_list(request):
    # The size limit must be installed before the CSRF check reads the body; CSRF is checked right after.
    if request.method == "POST":
        limit_dataset_uploads(request)
    return _dataset_list(request)


@login_required
@csrf_protect
@require_http_methods(["GET", "POST"])
def _dataset_list(request):
    status_code = 200
    too_large = ""
    if request.method == "POST":
        try:
            form = DatasetUploadForm(request.POST, request.FILES)
            if form.is_valid():
                dataset = services.dataset_create(
                    owner=request.user, uploaded_file=form.cleaned_data["file"], name=form.cleaned_data["name"]
                )
                messages.success(request, f"Dataset “{dataset.name}” uploaded: {dataset.records} records.")
                return redirect("dataset-detail", pk=dataset.pk)
        except UploadTooLarge as exc:
            # The body was not read (or not all of it): there is no bound form to attach the error to.
            form = DatasetUploadForm()
            too_large = f"The file is larger than the limit of {exc.max_bytes} bytes."
            status_code = 413
        except services.DatasetInvalid as exc:
            form.add_error("file", f"{exc.location}: {exc.reason}")
        if status_code == 200:
            status_code = 400
    else:
        form = DatasetUploadForm()
    datasets = selectors.dataset_list(user=request.user).select_related("owner")
    page = Paginator(datasets, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(
        request,
        "jobs/dataset_list.html",
        {"form": form, "too_large": too_large, "page": page, "datasets": page.object_list},
        status=status_code,
    )


@login_required
def dataset_detail(request, pk: int):
    dataset = get_object_or_404(selectors.dataset_list(user=request.user), pk=pk)
    total = dataset.records or 1
    label_rows = [
        (label, count, round(100 * count / total, 1))
        for label, count in sorted(dataset.label_counts.items(), key=lambda item: (-item[1], item[0]))
    ]
    jobs = dataset.jobs.select_related("trainer")[:20]
    return render(request, "jobs/dataset_detail.html", {"dataset": dataset, "label_rows": label_rows, "jobs": jobs})


@login_required
@require_http_methods(["GET", "POST"])
def dataset_delete(request, pk: int):
    dataset = get_object_or_404(selectors.dataset_list(user=request.user), pk=pk)
    if request.method == "POST":
        try:
            services.dataset_delete(dataset_id=dataset.id)
        except Conflict as exc:
            messages.error(request, str(exc.detail))
            return redirect("dataset-detail", pk=dataset.pk)
        except StorageError as exc:
            messages.error(request, f"Storage failed; nothing was deleted: {exc}")
            return redirect("dataset-detail", pk=dataset.pk)
        messages.success(request, f"Dataset “{dataset.name}” deleted.")
        return redirect(reverse("dataset-list"))
    return render(request, "jobs/dataset_confirm_delete.html", {"dataset": dataset})
