import asyncio
from datetime import timedelta

import pytest
from django.utils import timezone


@pytest.fixture
def make_job(db):
    """``make_job(owner, status=…, trainer=…, finished_days_ago=…)`` → a Job row as the jobs app keeps it."""
    from jobs.models import Job, Trainer

    def make(owner, *, status="running", trainer="example", finished_days_ago: float | None = None):
        trainer_row, _ = Trainer.objects.get_or_create(name=trainer)
        finished_at = None
        if status in Job.FINISHED:
            finished_at = timezone.now() - timedelta(days=finished_days_ago or 0)
        job = Job.objects.create(
            owner=owner,
            name=f"{owner.username}-job",
            base_model="tiny-llama",
            trainer=trainer_row,
            status=status,
            started_at=timezone.now() - timedelta(hours=1),
            finished_at=finished_at,
        )
        job.storage_prefix = f"users/{owner.id}/jobs/{job.id}/"
        job.save(update_fields=["storage_prefix"])
        return job

    return make


@pytest.fixture
def job(make_job, alice):
    return make_job(alice)


class ChannelListener:
    """A real django-eventstream listener on one channel: what a connected client would be handed."""

    def __init__(self, channel: str):
        from django_eventstream.views import Listener, get_listener_manager

        self.manager = get_listener_manager()
        self.listener = Listener()
        self.listener.loop = asyncio.new_event_loop()
        self.listener.channels = {channel}
        self.channel = channel
        self.manager.add_listener(self.listener)

    def events(self) -> list:
        return list(self.listener.channel_items.get(self.channel, []))

    def close(self) -> None:
        self.manager.remove_listener(self.listener)
        self.listener.loop.close()


@pytest.fixture
def listen():
    opened = []

    def open_listener(channel: str) -> ChannelListener:
        listener = ChannelListener(channel)
        opened.append(listener)
        return listener

    yield open_listener
    for listener in opened:
        listener.close()
