"""What the jobs app announces to the apps above it (which it never imports).

Each is sent once per state move, after the transaction that made it commits, by the caller
whose conditional UPDATE moved the row (``services.job_complete``, ``services.job_cancel``).
Receivers are one line calling their own app's service, and must not raise: a failure is
logged here and the job's row stays as committed.

- ``job_finished(job_id, owner_id, status)``: the job reached a final status (succeeded, failed, cancelled).
- ``job_succeeded(job_id)``: the job succeeded (sent after ``job_finished``).
"""

import logging

import django.dispatch

logger = logging.getLogger(__name__)

job_finished = django.dispatch.Signal()
job_succeeded = django.dispatch.Signal()


def announce(signal: django.dispatch.Signal, **data) -> None:
    """Send to every receiver; one that raises is logged and the others still run."""
    from .models import Job

    for receiver, outcome in signal.send_robust(sender=Job, **data):
        if isinstance(outcome, Exception):
            logger.error("A receiver of a job signal (%r) failed: %s", receiver, outcome, exc_info=outcome)
