"""Permission-aware reads of evaluations: owners see theirs, staff see all, others get nothing."""

from django.db.models import QuerySet

from finetune_studio.errors import DomainNotFound
from finetune_studio.ownership import visible_to

from . import metrics
from .models import ChatUsage, Evaluation, Prediction

SIDE_BY_SIDE_LIMIT = 500


class EvaluationsNotFound(DomainNotFound):
    """No such evaluation among those the user may see."""


def evaluations_visible(*, user) -> QuerySet[Evaluation]:
    return visible_to(Evaluation.objects.select_related("model", "owner"), user)


def evaluations_recent(*, user, limit: int) -> QuerySet[Evaluation]:
    return visible_to(Evaluation.objects.select_related("model"), user)[:limit]


def evaluations_failed_recently(*, user, limit: int) -> QuerySet[Evaluation]:
    return visible_to(Evaluation.objects.filter(status=Evaluation.Status.FAILED), user)[:limit]


def evaluation_get(*, user, evaluation_id: int) -> Evaluation:
    """The evaluation if the user may see it; EvaluationsNotFound otherwise (a 404, not a 403)."""
    evaluation = evaluations_visible(user=user).filter(id=evaluation_id).first()
    if evaluation is None:
        raise EvaluationsNotFound("No such evaluation.")
    return evaluation


def evaluatable_models(*, user) -> QuerySet:
    from models_app.selectors import models_visible

    return models_visible(user=user)


def test_sets_of(*, user) -> QuerySet:
    """The user's own datasets: an evaluation reads only its owner's test sets."""
    from jobs.models import Dataset

    return Dataset.objects.filter(owner=user).order_by("-created_at", "-id")


def evaluation_test_set(*, evaluation: Evaluation):
    """The owner's dataset the evaluation read (by its path), or None once that dataset is deleted."""
    return test_sets_of(user=evaluation.owner).filter(path=evaluation.test_set_path).first()


def evaluation_predictions(*, evaluation: Evaluation) -> QuerySet[Prediction]:
    return Prediction.objects.filter(evaluation=evaluation).order_by("index", "candidate")


def evaluation_side_by_side(*, evaluation: Evaluation, limit: int = SIDE_BY_SIDE_LIMIT) -> list[dict]:
    """Base vs the headline fine-tuned candidate (the best one once results exist, else the first),
    every example both answered (up to ``limit``), disagreements first."""
    from .services import as_engine_prediction

    headline = (evaluation.results or {}).get("fine_tuned", {}).get("model")
    if headline not in evaluation.candidates[1:]:
        headline = evaluation.candidates[1]
    candidates = [evaluation.candidates[0], headline]
    rows = [
        as_engine_prediction(row)
        for row in evaluation_predictions(evaluation=evaluation).filter(candidate__in=candidates)
    ]
    paired = metrics.paired_predictions(rows, candidates)
    return metrics.side_by_side(paired[candidates[0]], paired[candidates[1]], limit=limit)


def chat_usage_list(*, user, days: int) -> QuerySet[ChatUsage]:
    """The chat usage rows of the last ``days`` days (today included) the user may see (staff: everyone's)."""
    from datetime import timedelta

    from django.utils import timezone

    since = timezone.localdate() - timedelta(days=days - 1)
    rows = visible_to(ChatUsage.objects.filter(day__gte=since), user)
    return rows.select_related("owner").order_by("-day", "model_name", "source")
