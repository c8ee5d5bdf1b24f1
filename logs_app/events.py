"""The live log stream's channel, ``job-<id>``: the job's owner and staff may read it."""

from finetune_studio.events import channel_name, register_channel
from finetune_studio.eventstream_patches import publish_encoded

KIND = "job"


def job_channel(job_id: int) -> str:
    return channel_name(KIND, job_id)


def publish_log_event(job_id: int, event_type: str, payload: str, event_id: int) -> None:
    """A ``logs`` or ``end`` event of a job's stream, already encoded, with the seq it reaches as its id."""
    publish_encoded(job_channel(job_id), event_type, payload, event_id)


def can_read_job_channel(user, job_id: int) -> bool:
    from jobs.selectors import jobs_visible

    return jobs_visible(user=user).filter(id=job_id).exists()


def register() -> None:
    register_channel(KIND, can_read_job_channel)
