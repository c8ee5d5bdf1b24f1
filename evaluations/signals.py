"""What evaluations announce to apps above them (webhooks, sweeps), after the commit.

Receivers get ids and plain values and run through ``send_robust``: a failing subscriber is
logged, never undoes or blocks the evaluation's write.
"""

import logging

from django.db import transaction
from django.dispatch import Signal

logger = logging.getLogger(__name__)

# evaluation_id, owner_id, model_id, status, verdict
evaluation_finished = Signal()


def send_on_commit(signal: Signal, **payload) -> None:
    def send() -> None:
        for receiver, result in signal.send_robust(sender=None, **payload):
            if isinstance(result, Exception):
                logger.error("A receiver of an evaluations signal failed: %r", receiver, exc_info=result)

    transaction.on_commit(send)
