"""Sweep tasks: thin, by id; the reconciler owns the logic and is safe to run any number of times."""

from celery import shared_task
from django.db import InterfaceError, OperationalError

from . import services
from .models import Sweep


@shared_task(
    name="sweeps.sweep_advance",
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=True,
    max_retries=5,
    soft_time_limit=120,
    time_limit=180,
    ignore_result=True,
)
def sweep_advance(sweep_id: int) -> str | None:
    sweep = services.sweep_advance(sweep_id=sweep_id)
    return sweep.status if sweep else None


@shared_task(
    name="sweeps.sweep_advance_running",
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=True,
    max_retries=3,
    soft_time_limit=120,
    time_limit=180,
    ignore_result=True,
)
def sweep_advance_running() -> int:
    """Beat's safety net: every running sweep is looked at again (a lost signal, a killed worker)."""
    ids = list(Sweep.objects.filter(status=Sweep.Status.RUNNING).values_list("id", flat=True)[:500])
    for sweep_id in ids:
        services.sweep_advance(sweep_id=sweep_id)
    return len(ids)
