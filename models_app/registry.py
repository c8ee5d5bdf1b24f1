"""Registry writes: registered names and their version numbers (and, further down, aliases and gates).

A version number is taken from the name's counter while the name's row is locked, in the same
transaction that inserts the model: two models created at once for one name get consecutive
numbers, a rolled-back insert gives its number back, and a deleted version's number is never
handed out again. The (name, version) pair is also a database constraint.
"""

from django.db import IntegrityError, transaction
from django.db.models import F

from finetune_studio.registry_names import check_registered_name, derive_registered_name

from .models import RegisteredName


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
