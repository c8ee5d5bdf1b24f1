"""Server-rendered pages of the jobs app: jobs, the new-job form, datasets."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_http_methods, require_POST

from finetune_studio.objects import StorageError, UploadTooLarge

from . import previews, selectors, services
from .forms import HP_PREFIX, DatasetPreviewForm, DatasetSplitForm, DatasetUploadForm, JobForm, default_base_model
from .models import Dataset, Job, Trainer
from .uploads import limit_dataset_uploads

PAGE_SIZE = 50


@login_required
def job_list(request):
    jobs = selectors.jobs_visible(user=request.user)
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
    source = request.POST if request.method == "POST" else request.GET
    trainer = _pick_trainer(trainer_name, dataset_id=source.get("dataset", ""), user=request.user)
    initial, initial_problem = None, ""
    if (initial_model := source.get("initial_model", "")).isdigit():  # training a registry version further
        initial, initial_problem = services.initial_adapter_for(
            owner=request.user, model_id=int(initial_model), trainer=trainer
        )
    base_model = source.get("base_model", initial.base_model if initial else default_base_model()).strip()
    if request.method == "POST":
        form = JobForm(request.POST, user=request.user, trainer=trainer, base_model=base_model)
        if form.is_valid():
            dataset = form.cleaned_data["dataset"]
            validation = (
                form.cleaned_data["validation_dataset"] if trainer and trainer.takes_validation_dataset else None
            )
            try:
                job = services.job_create(
                    owner=request.user,
                    name=form.cleaned_data["name"],
                    base_model=form.cleaned_data["base_model"],
                    dataset_id=dataset.id if dataset else None,
                    trainer_name=form.cleaned_data["trainer"],
                    hyperparameters_given=form.hyperparameter_values(),
                    registered_name=form.cleaned_data["registered_name"],
                    validation_dataset_id=validation.id if validation else None,
                    initial_model_id=form.cleaned_data["initial_model"],
                )
            except services.JobsInvalid as exc:
                _attach_errors(form, exc.errors)
            except services.JobQueueUnavailable as exc:
                messages.error(request, str(exc))
                return redirect("job-detail", pk=exc.job_id)
            else:
                messages.success(request, f"Job “{job.name}” created: it starts as soon as a worker is free.")
                return redirect("job-detail", pk=job.pk)
    else:
        values = {
            "trainer": trainer.name if trainer else None,
            "dataset": request.GET.get("dataset"),
            "base_model": base_model,
            "initial_model": initial_model if initial_model.isdigit() else None,
        }
        form = JobForm(initial=values, user=request.user, trainer=trainer, base_model=base_model)
    context = {"form": form, "trainer": trainer, "initial": initial, "initial_problem": initial_problem}
    return render(request, "jobs/job_form.html", context)


def _pick_trainer(name: str | None, *, dataset_id: str, user) -> Trainer | None:
    """The trainer named, else one made for the chosen dataset's records (a trainer that declares their format:
    lora-dpo for preference pairs), else ``example``, else any available one."""
    if name:
        trainer = Trainer.objects.filter(name=name).first()
        if trainer:
            return trainer
    available = [trainer for trainer, ok, _ in selectors.trainers_with_availability() if ok]
    dataset = Dataset.objects.filter(id=dataset_id, owner=user).first() if dataset_id.isdigit() else None
    made_for = [trainer for trainer in available if dataset and dataset.format in (trainer.record_formats or ())]
    preferred = [trainer for trainer in available if trainer.name == "example"]
    return (made_for or preferred or available or [None])[0]


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
def base_model_list(request):
    return render(request, "jobs/base_model_list.html", {"base_models": selectors.base_models_catalogue()})


@login_required
def job_detail(request, pk: int):
    job = selectors.job_get(user=request.user, job_id=pk)
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
    job = selectors.job_get(user=request.user, job_id=pk)
    try:
        services.job_cancel(job_id=job.id)
    except services.JobsConflict as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "Job cancelled.")
    return redirect("job-detail", pk=job.pk)


@login_required
@require_POST
def job_delete(request, pk: int):
    job = selectors.job_get(user=request.user, job_id=pk)
    try:
        services.job_delete(job_id=job.id)
    except services.JobsConflict as exc:
        messages.error(request, str(exc))
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
    datasets = selectors.datasets_visible(user=request.user).select_related("owner")
    page = Paginator(datasets, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(
        request,
        "jobs/dataset_list.html",
        {"form": form, "too_large": too_large, "page": page, "datasets": page.object_list},
        status=status_code,
    )


@login_required
def dataset_detail(request, pk: int):
    dataset = selectors.dataset_get(user=request.user, dataset_id=pk)
    total = dataset.records or 1
    label_rows = [
        (label, count, round(100 * count / total, 1))
        for label, count in sorted(dataset.label_counts.items(), key=lambda item: (-item[1], item[0]))
    ]
    jobs = dataset.jobs.select_related("trainer")[:20]
    validation_jobs = dataset.validation_jobs.select_related("trainer")[:20]
    bases = list(previews.preview_bases())
    preview_form = DatasetPreviewForm(request.GET or None, bases=bases)
    context = {
        "dataset": dataset,
        "label_rows": label_rows,
        "jobs": jobs,
        "validation_jobs": validation_jobs,
        "bases": bases,
        "preview_form": preview_form,
        "split_form": DatasetSplitForm(),
    }
    status_code = 200
    if request.GET and not preview_form.is_valid():
        status_code = 400
    elif bases:
        query = preview_form.cleaned_data if request.GET else {}
        base = query.get("base") or bases[0]
        max_length = query.get("max_length") or 512
        try:
            context["rendered"] = previews.dataset_rendered_records(
                dataset=dataset, base_name=base, count=query.get("records") or 3, max_length=max_length
            )
            context["lengths"] = previews.dataset_token_lengths(dataset=dataset, base_name=base, max_length=max_length)
        except (previews.PreviewUnavailable, StorageError) as exc:
            context["preview_error"] = str(exc)
        context.update(preview_base=base, preview_max_length=max_length)
    return render(request, "jobs/dataset_detail.html", context, status=status_code)


@login_required
@require_POST
def dataset_split(request, pk: int):
    dataset = selectors.dataset_get(user=request.user, dataset_id=pk)
    form = DatasetSplitForm(request.POST)
    if not form.is_valid():
        errors = "; ".join(f"{field}: {' '.join(messages_)}" for field, messages_ in form.errors.items())
        messages.error(request, f"Not split: {errors}")
        return redirect("dataset-detail", pk=dataset.pk)
    try:
        train, test = services.dataset_split(dataset_id=dataset.id, **form.cleaned_data)
    except services.DatasetSplitInvalid as exc:
        messages.error(request, f"Not split: {exc}")
        return redirect("dataset-detail", pk=dataset.pk)
    except StorageError as exc:
        messages.error(request, f"Storage failed; nothing was created: {exc}")
        return redirect("dataset-detail", pk=dataset.pk)
    messages.success(
        request, f"Split into “{train.name}” ({train.records} records) and “{test.name}” ({test.records} records)."
    )
    return redirect("dataset-detail", pk=train.pk)


@login_required
@require_http_methods(["GET", "POST"])
def dataset_delete(request, pk: int):
    dataset = selectors.dataset_get(user=request.user, dataset_id=pk)
    if request.method == "POST":
        try:
            services.dataset_delete(dataset_id=dataset.id)
        except services.JobsConflict as exc:
            messages.error(request, str(exc))
            return redirect("dataset-detail", pk=dataset.pk)
        except StorageError as exc:
            messages.error(request, f"Storage failed; nothing was deleted: {exc}")
            return redirect("dataset-detail", pk=dataset.pk)
        messages.success(request, f"Dataset “{dataset.name}” deleted.")
        return redirect(reverse("dataset-list"))
    return render(request, "jobs/dataset_confirm_delete.html", {"dataset": dataset})
