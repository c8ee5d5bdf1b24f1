"""Registry reads: names, their versions and aliases, through the viewer's permissions."""

from django.db.models import Count, QuerySet
from django.http import Http404

from finetune_studio.ownership import visible_to

from .models import AliasEvent, ModelAlias, PromotionGate, RegisteredModel, RegisteredName


class AmbiguousName(Exception):
    """Staff asked for a name several users have; the message says to add ``?owner=<id>``."""


def registered_names_visible(*, user) -> QuerySet[RegisteredName]:
    return visible_to(RegisteredName.objects.all(), user)


def registered_name_list(*, user) -> QuerySet[RegisteredName]:
    return (
        registered_names_visible(user=user)
        .select_related("owner")
        .annotate(version_count=Count("versions"))
        .order_by("name", "id")
    )


def registered_name_get(*, user, name: str, owner_id: int | None = None) -> RegisteredName:
    """The name as the user knows it: their own; for staff, another user's when only one has it
    (or the one ``owner_id`` says). Http404 for a name the user may not see."""
    names = registered_names_visible(user=user).filter(name=name).select_related("owner")
    if owner_id is not None:
        names = names.filter(owner_id=owner_id)
    found = list(names[:3])
    own = [item for item in found if item.owner_id == user.id]
    if own and owner_id is None:
        return own[0]
    if len(found) == 1:
        return found[0]
    if not found:
        raise Http404(f"no registered name {name!r}")
    raise AmbiguousName(f"several users have a registered name {name!r}: add ?owner=<user id>")


def registered_name_versions(*, registered_name: RegisteredName) -> QuerySet[RegisteredModel]:
    """Newest version first, without the heavy JSON columns."""
    return (
        RegisteredModel.objects.filter(registered_name=registered_name)
        .defer("files", "training_metrics", "provenance", "deploy_details")
        .order_by("-version")
    )


def registry_page_extras(*, registered_name: RegisteredName) -> dict:
    """What the name's page shows besides its versions: aliases, their history, the gate."""
    return {
        "aliases": list(name_aliases(registered_name=registered_name)),
        "history": list(alias_history(registered_name=registered_name, limit=50)),
        "gate": name_gate(registered_name=registered_name),
    }


def name_aliases(*, registered_name: RegisteredName):
    return ModelAlias.objects.filter(registered_name=registered_name).select_related("model", "moved_by")


def alias_get(*, registered_name: RegisteredName, alias: str) -> ModelAlias:
    """The alias with the version it points to, in one indexed query; Http404 when there is none."""
    found = (
        ModelAlias.objects.select_related("model", "model__registered_name")
        .filter(registered_name=registered_name, alias=alias)
        .first()
    )
    if found is None:
        raise Http404(f"{registered_name.name} has no alias {alias!r}")
    return found


def alias_history(*, registered_name: RegisteredName, alias: str | None = None, limit: int = 100):
    events = AliasEvent.objects.filter(registered_name=registered_name).select_related("moved_by")
    if alias is not None:
        events = events.filter(alias=alias)
    return events[:limit]


def name_gate(*, registered_name: RegisteredName) -> PromotionGate | None:
    return PromotionGate.objects.filter(registered_name=registered_name).first()


def alias_resolve(*, user, name: str, alias: str, owner_id: int | None = None) -> ModelAlias:
    """The alias, its name and its version in one query for the owner's own names (what integrations
    pin); staff reaching another user's name take the general path. Http404 when there is none."""
    if owner_id is None or owner_id == user.id:
        found = (
            ModelAlias.objects.select_related("registered_name", "model")
            .filter(registered_name__owner_id=user.id, registered_name__name=name, alias=alias)
            .first()
        )
        if found is not None and found.model is not None:
            found.model.registered_name = found.registered_name  # the same row: no second join
        if found is not None or not user.is_staff:
            if found is None:
                raise Http404(f"no alias {alias!r} of a registered name {name!r}")
            return found
    registered = registered_name_get(user=user, name=name, owner_id=owner_id)
    return alias_get(registered_name=registered, alias=alias)
