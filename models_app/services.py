"""Model registry writes. (Initial seam by the lead: the models app owns and completes it.)"""

from .models import RegisteredModel


def model_create_from_job(*, job_id: int) -> RegisteredModel | None:
    """Create the one model of a succeeded job (idempotent: a second call returns the existing one)."""
    raise NotImplementedError("implemented by the model registry work (issue 5)")
