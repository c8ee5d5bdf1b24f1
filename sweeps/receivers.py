"""Trial progress arrives as the lower apps' signals; each one asks the trial's sweep to advance."""

from django.db.models import Q

from .models import SweepTrial


def _advance(sweep_ids) -> None:
    from .tasks import sweep_advance

    for sweep_id in set(sweep_ids):
        sweep_advance.delay(sweep_id)


def _on_job_finished(sender, *, job_id, **kwargs) -> None:
    _advance(SweepTrial.objects.filter(job_id=job_id, sweep__status="running").values_list("sweep_id", flat=True))


def _on_model_created(sender, *, job_id=None, **kwargs) -> None:
    if job_id is not None:
        _on_job_finished(sender, job_id=job_id)


def _on_evaluation_finished(sender, *, evaluation_id, **kwargs) -> None:
    trials = SweepTrial.objects.filter(
        Q(evaluation_id=evaluation_id) | Q(champion_evaluation_id=evaluation_id), sweep__status="running"
    )
    _advance(trials.values_list("sweep_id", flat=True))


def connect() -> None:
    from evaluations.signals import evaluation_finished
    from jobs.signals import job_finished
    from models_app.signals import model_created

    job_finished.connect(_on_job_finished, dispatch_uid="sweeps.job_finished")
    model_created.connect(_on_model_created, dispatch_uid="sweeps.model_created")
    evaluation_finished.connect(_on_evaluation_finished, dispatch_uid="sweeps.evaluation_finished")
