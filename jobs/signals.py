"""What the jobs app announces to apps above it (models, sweeps, webhooks), always after the commit.

Receivers get ids and plain values and run through ``send_robust``: a failing subscriber is
logged and never undoes or blocks a job's state move.
"""

import logging

from django.db import transaction
from django.dispatch import Signal

logger = logging.getLogger(__name__)

# job_id, owner_id, status (succeeded | failed | cancelled)
job_finished = Signal()


def send_on_commit(signal: Signal, **payload) -> None:
    def send() -> None:
        for receiver, result in signal.send_robust(sender=None, **payload):
            if isinstance(result, Exception):
                logger.error("A receiver of a jobs signal failed: %r", receiver, exc_info=result)

    transaction.on_commit(send)
