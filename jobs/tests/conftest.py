"""Shared fixtures of the jobs tests: the builders live in tests/factories.py (fixtures in the root conftest)."""

import pytest

from tests.factories import SAMPLE_ROWS, jsonl  # noqa: F401  (the tests' sample data)


@pytest.fixture
def model_creations(job_signals):
    """Jobs whose success was announced (``jobs.signals.job_succeeded``): what the registry creates models for."""

    return SucceededJobs(job_signals)


class SucceededJobs:
    """Compares equal to the list of job ids announced as succeeded, in order."""

    def __init__(self, sent):
        self.sent = sent

    def ids(self) -> list[int]:
        return [data["job_id"] for name, data in self.sent if name == "job_succeeded"]

    def __eq__(self, other):
        return self.ids() == other

    def __repr__(self):
        return repr(self.ids())
