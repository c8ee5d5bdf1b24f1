"""Registry pages: names with their versions, aliases, history and gate; scoped to the signed-in user."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET

from . import registry_selectors

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
    }
    return render(request, "models_app/registry_detail.html", context)


def back_to(registered, message_level, request, text: str):
    getattr(messages, message_level)(request, text)
    suffix = f"?owner={registered.owner_id}" if registered.owner_id != request.user.id else ""
    return redirect(f"/registry/{registered.name}/{suffix}")
