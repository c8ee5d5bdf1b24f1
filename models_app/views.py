"""Model registry pages: list, detail, ZIP download and delete, all scoped to the signed-in user."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from finetune_studio.objects import StorageError

from . import archive, artifacts, deploy, deployments, selectors, services
from .filters import ModelFilter
from .lineage import deploy_attempt, lineage_for, live_deployment
from .models import RegisteredModel

PAGE_SIZE = 25


@login_required
@require_GET
def model_list(request):
    filterset = ModelFilter(request.GET, queryset=selectors.model_list(user=request.user))
    if filterset.is_valid():
        queryset = filterset.qs
        status = 200
    else:
        queryset = RegisteredModel.objects.none()
        status = 400
    page = Paginator(queryset, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "page": page,
        "filterset": filterset,
        "statuses": RegisteredModel.Status.choices,
        "query": query.urlencode(),
    }
    return render(request, "models_app/model_list.html", context, status=status)


def _parity_checkable(model) -> bool:
    """Whether the page offers a parity check: a live deployment, a LoRA adapter, a base the local engine loads.

    The check itself (evaluations) validates all of it again; this only decides whether to show the button.
    """
    from finetune_studio.base_models import BaseModelRefused, base_model_resolve

    if not model.ollama_digest or deploy.undeployable_reason(model) is not None:
        return False
    try:
        base_model_resolve(model.base_model, loadable=True)
    except BaseModelRefused:
        return False
    return True


@login_required
@require_GET
def model_detail(request, pk: int):
    model = selectors.model_get(user=request.user, model_id=pk)
    links_error = None
    try:
        links = selectors.model_download_links(model)
    except StorageError as exc:
        links, links_error = {"files": {}}, str(exc)
    files = [{**item, "link": links["files"].get(item["path"])} for item in model.files]
    context = {
        "model": model,
        "files": files,
        "links_error": links_error,
        "evaluations": selectors.model_evaluations(user=request.user, model=model)[:50],
        "lineage": lineage_for(request.user, model),
        "deployment": live_deployment(model),
        "deploy_attempt": deploy_attempt(model),
        "deploy_defaults": {"ollama_name": deploy.default_ollama_name(model), "base": deploy.default_base(model)},
        "deploy_unavailable": deploy.undeployable_reason(model),
        "parity_checkable": _parity_checkable(model),
        "can_train_further": model.status == model.Status.READY and artifacts.has_lora_adapter(model.files),
        "chat_usage": selectors.model_chat_usage(model=model),
        "loss_history": [
            {"step": point.get("step"), "loss": point.get("loss"), "eval_loss": point.get("eval_loss")}
            for point in model.loss_history
        ],
    }
    return render(request, "models_app/model_detail.html", context)


@login_required
@require_GET
def model_download(request, pk: int):
    return archive.zip_response(request, selectors.model_get(user=request.user, model_id=pk))


@login_required
@require_http_methods(["GET", "POST"])
def model_delete(request, pk: int):
    """GET asks for confirmation (works without JavaScript); POST deletes files then the row."""
    model = selectors.model_get(user=request.user, model_id=pk)
    if request.method == "GET":
        return render(request, "models_app/model_confirm_delete.html", {"model": model})
    try:
        removed = services.model_delete(model_id=model.id)
    except services.ModelsConflict as exc:
        messages.error(request, f"“{model.name}” was not deleted: {exc}.")
        return redirect("model-detail", pk=model.pk)
    except StorageError as exc:
        messages.error(
            request, f"Could not delete the files of “{model.name}” from storage, so nothing was deleted: {exc}"
        )
        return redirect("model-detail", pk=model.pk)
    messages.success(request, f"Deleted “{model.name}” and its {removed} stored files.")
    return redirect("model-list")


@login_required
@require_POST
def model_deploy(request, pk: int):
    """The Deploy form: the same service as the API; refusals come back as a message on the model page."""
    model = selectors.model_get(user=request.user, model_id=pk)
    try:
        model = deployments.model_deploy_start(
            model_id=model.id,
            ollama_name=request.POST.get("ollama_name", "").strip() or None,
            base=request.POST.get("base", "").strip() or None,
        )
    except (deploy.DeployRefused, services.ModelQueueUnavailable) as exc:
        messages.error(request, f"Not deployed: {exc}")
        return redirect("model-detail", pk=model.pk)
    messages.success(
        request, f"Deploying to Ollama as “{model.deploy_details.get('target')}”; this page updates when it is done."
    )
    return redirect("model-detail", pk=model.pk)
