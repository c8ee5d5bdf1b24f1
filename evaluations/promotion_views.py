"""The registry page's one-click "evaluate against the champion" (a form POST; works without JavaScript)."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from models_app import registry_selectors

from .promotion import evaluation_start_for_promotion
from .services import EvaluationQueueUnavailable, EvaluationsInvalid


@login_required
@require_POST
def evaluate_for_promotion(request, name: str, version: int):
    raw_owner = request.POST.get("owner")
    try:
        registered = registry_selectors.registered_name_get(
            user=request.user, name=name, owner_id=int(raw_owner) if raw_owner and raw_owner.isdigit() else None
        )
    except registry_selectors.AmbiguousName:
        raise Http404("add the owner") from None
    gate = registry_selectors.name_gate(registered_name=registered)
    candidate = registered.versions.filter(version=version).first()
    back = f"/registry/{registered.name}/" + (
        f"?owner={registered.owner_id}" if registered.owner_id != request.user.id else ""
    )
    if candidate is None:
        raise Http404("no such version")
    if gate is None:
        messages.error(request, "This name has no promotion gate: set one first.")
        return redirect(back)
    holder_alias = registered.aliases.filter(alias=gate.alias).select_related("model").first()
    holder = holder_alias.model if holder_alias else None
    try:
        evaluation = evaluation_start_for_promotion(user=request.user, candidate=candidate, gate=gate, holder=holder)
    except EvaluationsInvalid as exc:
        messages.error(request, f"Could not start the evaluation: {exc}")
        return redirect(back)
    except EvaluationQueueUnavailable as exc:
        messages.error(request, str(exc))
        return redirect(back)
    messages.success(request, f"Evaluation #{evaluation.id} started: v{version} against the {gate.alias}.")
    return redirect("evaluation-detail", pk=evaluation.id)
