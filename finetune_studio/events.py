"""Live events pushed to pages through django-eventstream.

Channels:
- ``user-<id>``: everything a user's pages show live (job status and progress, models
  created, evaluation progress). Only that user may read it.
- ``job-<id>``: the log stream of one job. Its owner and staff may read it.

Events are always published after the transaction that wrote their rows commits.
"""

import logging

from django.db import transaction
from django_eventstream import send_event
from django_eventstream.channelmanager import DefaultChannelManager

logger = logging.getLogger(__name__)


def user_channel(user_id: int) -> str:
    return f"user-{user_id}"


def job_channel(job_id: int) -> str:
    return f"job-{job_id}"


def publish_event(channel: str, event_type: str, data: dict) -> None:
    """Send now. A broken fan-out (Redis down) is logged: the rows are already safe in the database."""
    try:
        send_event(channel, event_type, data)
    except Exception:
        logger.exception("Publishing %s on %s failed; clients will catch up from the database", event_type, channel)


def publish_event_on_commit(channel: str, event_type: str, data: dict) -> None:
    transaction.on_commit(lambda: publish_event(channel, event_type, data))


class StudioChannelManager(DefaultChannelManager):
    def can_read_channel(self, user, channel: str) -> bool:
        if user is None or not user.is_authenticated:
            return False
        kind, _, raw_id = channel.partition("-")
        if not raw_id.isdigit():
            return False
        if kind == "user":
            return int(raw_id) == user.id
        if kind == "job":
            from jobs.models import Job

            jobs = Job.objects.filter(id=int(raw_id))
            return user.is_staff or jobs.filter(owner_id=user.id).exists()
        return False
