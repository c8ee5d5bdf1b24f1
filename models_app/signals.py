"""What the registry announces to apps above it (webhooks, sweeps), always after the commit.

Receivers get ids and plain values, never model instances, and run through ``send_robust``:
a failing subscriber is logged and never undoes or blocks a registry write.
"""

import logging

from django.db import transaction
from django.dispatch import Signal

logger = logging.getLogger(__name__)

# model_id, owner_id, registered_name, version
model_created = Signal()
# registered_name_id, owner_id, name, alias, from_version, to_version, moved_by_id, overridden
alias_moved = Signal()


def send_on_commit(signal: Signal, **payload) -> None:
    def send() -> None:
        for receiver, result in signal.send_robust(sender=None, **payload):
            if isinstance(result, Exception):
                logger.error("A receiver of a registry signal failed: %r", receiver, exc_info=result)

    transaction.on_commit(send)
