import pytest

from jobs.models import Trainer


@pytest.fixture
def slow_trainer(db):
    return Trainer.objects.create(
        name="slow-test",
        description="test trainer",
        command=["{python}", "-m", "runner.tests.slow_trainer"],
        hyperparameter_schema={
            "seconds": {"type": "number", "default": 1, "minimum": 0},
            "interval": {"type": "number", "default": 0.1, "minimum": 0.01},
            "exit_code": {"type": "integer", "default": 0},
            "ignore_sigterm": {"type": "boolean", "default": False},
            "pid_file": {"type": "string", "default": ""},
            "artifact": {"type": "boolean", "default": False},
        },
        timeout_seconds=60,
        loads_base_model=False,
    )


@pytest.fixture
def model_creations(job_signals):
    """Job ids whose success the jobs app announced (``jobs.signals.job_succeeded``)."""
    from jobs.tests.conftest import SucceededJobs

    return SucceededJobs(job_signals)
