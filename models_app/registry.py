"""Registry writes: registered names and their version numbers (and, further down, aliases and gates).

A version number is taken from the name's counter while the name's row is locked, in the same
transaction that inserts the model: two models created at once for one name get consecutive
numbers, a rolled-back insert gives its number back, and a deleted version's number is never
handed out again. The (name, version) pair is also a database constraint.
"""

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from finetune_studio.events import publish_event_on_commit, user_channel
from finetune_studio.keys import InvalidName, clean_relative_path
from finetune_studio.registry_names import (
    InvalidRegisteredName,
    check_alias,
    check_registered_name,
    derive_registered_name,
)
from jobs.selectors import dataset_metric

from .evidence import Evidence, promotion_evidence
from .models import AliasEvent, ModelAlias, PromotionGate, RegisteredModel, RegisteredName
from .signals import alias_moved, send_on_commit


def registered_name_lock(*, owner_id: int, name: str) -> RegisteredName:
    """The owner's name (created when new), locked until the caller's transaction ends. Must run in one."""
    name = check_registered_name(name)
    found = RegisteredName.objects.select_for_update().filter(owner_id=owner_id, name=name).first()
    if found is not None:
        return found
    try:
        with transaction.atomic():
            RegisteredName.objects.create(owner_id=owner_id, name=name)
    except IntegrityError:
        pass  # created meanwhile by a concurrent first version: lock theirs
    return RegisteredName.objects.select_for_update().get(owner_id=owner_id, name=name)


def version_allocate(*, registered_name: RegisteredName) -> int:
    """The next version number of a locked name (see registered_name_lock)."""
    RegisteredName.objects.filter(id=registered_name.id).update(last_version=F("last_version") + 1)
    registered_name.refresh_from_db(fields=["last_version"])
    return registered_name.last_version


def default_name_for_job(job) -> str:
    return job.registered_name or derive_registered_name(job.name, fallback=f"job-{job.id}")


def default_name_for_model(name: str, *, owner_id: int) -> str:
    return derive_registered_name(name, fallback=f"models-of-user-{owner_id}")


# --- Aliases ------------------------------------------------------------------------------------


class RegistryInvalid(ValueError):
    """Input the registry cannot use; ``field`` names what is wrong (400)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class AliasConflict(Exception):
    """The alias moved meanwhile (``from_version`` is no longer current): 409 with where it is now."""

    def __init__(self, message: str, *, current_version: int | None):
        super().__init__(message)
        self.current_version = current_version


class GateRefused(Exception):
    """The gate's evidence does not allow the move: 409 with the evidence."""

    def __init__(self, evidence: Evidence):
        super().__init__(f"the promotion gate refuses the move: {evidence.reason}")
        self.evidence = evidence


class OverrideNotAllowed(Exception):
    """Only staff may move a gated alias without passing evidence (403)."""


def _version_of(registered_name: RegisteredName, version) -> RegisteredModel:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise RegistryInvalid("version", f"must be a positive integer, got {version!r}")
    model = RegisteredModel.objects.filter(registered_name=registered_name, version=version).first()
    if model is None:
        raise RegistryInvalid("version", f"{registered_name.name} has no version {version}")
    return model


def _locked_alias(registered_name: RegisteredName, alias: str) -> ModelAlias:
    """The alias row (created, pointing nowhere, when new), locked until commit."""
    try:
        with transaction.atomic():
            ModelAlias.objects.get_or_create(registered_name=registered_name, alias=alias)
    except IntegrityError:
        pass  # created by a concurrent first move: lock theirs
    # Locks only the alias row (PostgreSQL refuses FOR UPDATE across the outer join to a nullable model).
    return ModelAlias.objects.select_for_update().get(registered_name=registered_name, alias=alias)


def alias_move(
    *,
    registered_name: RegisteredName,
    alias: str,
    version: int,
    moved_by,
    from_version: int | None = None,
    override_reason: str = "",
) -> ModelAlias:
    """Point ``alias`` at ``version``; the one write path for aliases.

    The alias row is locked for the whole decision, so of two concurrent moves that name the same
    ``from_version`` exactly one wins and the other finds the alias moved (AliasConflict, 409).
    A gated alias needs passing evidence (GateRefused, 409, with it); staff may override with a
    reason (OverrideNotAllowed, 403, for anyone else), which is recorded with the evidence.
    Moving an alias where it already points changes nothing and records nothing.
    """
    try:
        alias = check_alias(alias)
    except InvalidRegisteredName as exc:
        raise RegistryInvalid("alias", str(exc)) from None
    if from_version is not None and (isinstance(from_version, bool) or not isinstance(from_version, int)):
        raise RegistryInvalid("from_version", f"must be an integer, got {from_version!r}")
    override_reason = (override_reason or "").strip()
    if override_reason and not moved_by.is_staff:
        raise OverrideNotAllowed("only staff may override the promotion gate")
    with transaction.atomic():
        target = _version_of(registered_name, version)
        row = _locked_alias(registered_name, alias)
        holder = row.model
        current = holder.version if holder is not None else None
        if from_version is not None and from_version != current:
            where = f"v{current}" if current is not None else "no version"
            raise AliasConflict(
                f"{registered_name.name}@{alias} points to {where}, not v{from_version}: it moved meanwhile",
                current_version=current,
            )
        if current == version:
            return row
        evidence: dict = {}
        gate = PromotionGate.objects.filter(registered_name=registered_name, alias=alias).first()
        if gate is not None:
            found = promotion_evidence(gate=gate, candidate=target, holder=holder)
            evidence = found.as_dict()
            if not found.passed:
                if not override_reason:
                    raise GateRefused(found)
                evidence["overridden"] = True
        now = timezone.now()
        ModelAlias.objects.filter(id=row.id).update(model=target, moved_by=moved_by, moved_at=now)
        row.refresh_from_db()
        AliasEvent.objects.create(
            registered_name=registered_name,
            alias=alias,
            from_version=current,
            to_version=version,
            moved_by=moved_by,
            evidence=evidence,
            override_reason=override_reason,
        )
        payload = {
            "registered_name_id": registered_name.id,
            "owner_id": registered_name.owner_id,
            "name": registered_name.name,
            "alias": alias,
            "from_version": current,
            "to_version": version,
            "moved_by_id": moved_by.id,
            "overridden": bool(evidence.get("overridden")),
        }
        publish_event_on_commit(
            user_channel(registered_name.owner_id),
            "registry",
            {"action": "alias_moved", **payload, "url": f"/registry/{registered_name.name}/"},
        )
        send_on_commit(alias_moved, **payload)
    return row


# --- The promotion gate -------------------------------------------------------------------------


def _check_test_set_path(owner_id: int, path):
    """The clean path and its dataset (None: a path with no dataset row, read only when evaluated)."""
    from jobs.models import Dataset

    if not isinstance(path, str) or not path.strip():
        raise RegistryInvalid("test_set_path", "is required")
    path = path.strip()
    try:
        clean_relative_path(path, what="test_set_path")
    except InvalidName as exc:
        raise RegistryInvalid("test_set_path", str(exc)) from None
    own_prefix = f"datasets/users/{int(owner_id)}/"
    dataset = Dataset.objects.filter(owner_id=owner_id, path=path).only("task", "records", "tool_call_answers").first()
    if dataset is None and not path.startswith(own_prefix):
        raise RegistryInvalid("test_set_path", f"must be the path of one of the owner's datasets ({own_prefix}…)")
    return path, dataset


def _check_endpoint_known(name: str) -> None:
    """A gate names an endpoint the operator configured (GET /api/v1/inference/endpoints); a disabled one may
    still be named (the evaluation it asks for is refused with the reason until it is enabled again)."""
    from inference.base import Refused
    from inference.selectors import endpoint_get

    try:
        endpoint_get(name=name)
    except Refused as exc:
        raise RegistryInvalid("endpoint", f"{exc} (see GET /api/v1/inference/endpoints)") from None


def gate_set(
    *,
    registered_name: RegisteredName,
    test_set_path: str,
    metric: str | None,
    endpoint: str,
    threshold: float,
    updated_by,
    alias: str = "champion",
) -> PromotionGate:
    """Create or replace the name's gate (one per name, on ``alias``). Moves already made stand.

    ``metric``: any comparable one (the gate's evaluations score its task); None picks the test set's
    default, accuracy for a labelled set, token F1 for a chat or instruction one, exact match for one at
    least half of whose records are answered by a tool call.
    """
    try:
        alias = check_alias(alias)
    except InvalidRegisteredName as exc:
        raise RegistryInvalid("alias", str(exc)) from None
    path, dataset = _check_test_set_path(registered_name.owner_id, test_set_path)
    try:
        metric = dataset_metric(metric, dataset=dataset)
    except ValueError as exc:
        raise RegistryInvalid("metric", str(exc)) from None
    if not isinstance(endpoint, str) or not endpoint.strip() or len(endpoint) > 100:
        raise RegistryInvalid("endpoint", "must be the name of an inference endpoint (e.g. 'ollama')")
    _check_endpoint_known(endpoint.strip())
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not -1.0 <= threshold <= 1.0:
        raise RegistryInvalid("threshold", f"must be a number between -1 and 1, got {threshold!r}")
    with transaction.atomic():
        gate, _ = PromotionGate.objects.update_or_create(
            registered_name=registered_name,
            defaults={
                "alias": alias,
                "test_set_path": path,
                "metric": metric,
                "endpoint": endpoint.strip(),
                "threshold": float(threshold),
                "updated_by": updated_by,
            },
        )
    return gate


def gate_remove(*, registered_name: RegisteredName) -> bool:
    deleted, _ = PromotionGate.objects.filter(registered_name=registered_name).delete()
    return bool(deleted)
