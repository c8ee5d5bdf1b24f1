"""Registry pages: names with their versions, aliases, history and gate; scoped to the signed-in user."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from finetune_studio.records import METRICS_BY_TASK, task_of_metric
from inference.selectors import endpoint_statuses, endpoint_suggested_name
from jobs.models import Dataset

from . import registry, registry_selectors

PAGE_LIMIT = 200


def _name_of(request, name: str):
    raw_owner = request.GET.get("owner") or request.POST.get("owner")
    if raw_owner is not None and not str(raw_owner).isdigit():
        raise Http404("no such owner")
    try:
        return registry_selectors.registered_name_get(
            user=request.user, name=name, owner_id=int(raw_owner) if raw_owner else None
        )
    except registry_selectors.AmbiguousName as exc:
        return HttpResponseBadRequest(str(exc))


@login_required
@require_GET
def registry_list(request):
    names = registry_selectors.registered_name_list(user=request.user)[:PAGE_LIMIT]
    return render(request, "models_app/registry_list.html", {"names": names})


@login_required
@require_GET
def registry_detail(request, name: str):
    registered = _name_of(request, name)
    if isinstance(registered, HttpResponseBadRequest):
        return registered
    context = {
        "registered": registered,
        "versions": registry_selectors.registered_name_versions(registered_name=registered)[:PAGE_LIMIT],
        **registry_selectors.registry_page_extras(registered_name=registered),
        **_gate_form_choices(registered),
        "owner_query": f"?owner={registered.owner_id}" if registered.owner_id != request.user.id else "",
    }
    return render(request, "models_app/registry_detail.html", context)


def _gate_form_choices(registered) -> dict:
    """The gate form's test sets (the owner's datasets), metrics by task and endpoints with their availability."""
    endpoints = endpoint_statuses()
    test_sets = list(
        Dataset.objects.filter(owner_id=registered.owner_id)
        .order_by("-created_at", "-id")
        .only("id", "name", "path", "records", "task")[:PAGE_LIMIT]
    )
    gate = getattr(registered, "gate", None)
    return {
        "metric_groups": METRICS_BY_TASK,
        "gate_task": task_of_metric(gate.metric) if gate else None,
        "gate_test_sets": test_sets,
        "gate_test_set_paths": {dataset.path for dataset in test_sets},
        "endpoints": endpoints,
        "suggested_endpoint": endpoint_suggested_name(statuses=endpoints),
    }


def back_to(registered, message_level, request, text: str):
    getattr(messages, message_level)(request, text)
    suffix = f"?owner={registered.owner_id}" if registered.owner_id != request.user.id else ""
    return redirect(f"/registry/{registered.name}/{suffix}")


def _int_or_none(raw):
    raw = (raw or "").strip()
    return int(raw) if raw.isdigit() else None


@login_required
@require_POST
def registry_alias_move(request, name: str):
    registered = _name_of(request, name)
    if isinstance(registered, HttpResponseBadRequest):
        return registered
    version = _int_or_none(request.POST.get("version"))
    if version is None:
        return back_to(registered, "error", request, "Choose the version the alias should point to.")
    alias = (request.POST.get("alias") or "").strip()
    try:
        registry.alias_move(
            registered_name=registered,
            alias=alias,
            version=version,
            from_version=_int_or_none(request.POST.get("from_version")),
            override_reason=request.POST.get("override_reason", ""),
            moved_by=request.user,
        )
    except registry.RegistryInvalid as exc:
        return back_to(registered, "error", request, f"{exc.field}: {exc}")
    except (registry.AliasConflict, registry.OverrideNotAllowed) as exc:
        return back_to(registered, "error", request, str(exc))
    except registry.GateRefused as exc:
        return back_to(registered, "error", request, f"Refused by the gate: {exc.evidence.reason}")
    return back_to(registered, "success", request, f"{alias} now points to v{version}.")


@login_required
@require_POST
def registry_gate_set(request, name: str):
    registered = _name_of(request, name)
    if isinstance(registered, HttpResponseBadRequest):
        return registered
    try:
        threshold = float(request.POST.get("threshold") or 0)
    except ValueError:
        return back_to(registered, "error", request, "threshold: must be a number between -1 and 1")
    try:
        registry.gate_set(
            registered_name=registered,
            test_set_path=request.POST.get("test_set_path", ""),
            metric=request.POST.get("metric") or None,
            endpoint=request.POST.get("endpoint") or "ollama",
            threshold=threshold,
            alias=request.POST.get("alias") or "champion",
            updated_by=request.user,
        )
    except registry.RegistryInvalid as exc:
        return back_to(registered, "error", request, f"{exc.field}: {exc}")
    return back_to(registered, "success", request, "Gate saved.")
