"""Log ingestion. (Initial version by the lead: the logs app owns and may rewrite it, keeping the signature.)"""

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from finetune_studio.events import job_channel, publish_event_on_commit

from .models import LogEntry


@transaction.atomic
def log_lines_append(*, job_id: int, lines: list[dict], source: str = "") -> list[LogEntry]:
    """Persist a batch of lines for a job with the next sequence numbers, then publish them as one event."""
    from jobs.models import Job

    Job.objects.select_for_update().only("id").get(id=job_id)
    last = LogEntry.objects.filter(job_id=job_id).order_by("-seq").values_list("seq", flat=True).first() or 0
    now = timezone.now()
    entries = [
        LogEntry(
            job_id=job_id,
            seq=last + offset,
            timestamp=line.get("timestamp") if isinstance(line.get("timestamp"), datetime) else now,
            level=line.get("level") or LogEntry.Level.INFO,
            message=line["message"],
            source=source,
        )
        for offset, line in enumerate(lines, start=1)
    ]
    LogEntry.objects.bulk_create(entries)
    if entries:
        publish_event_on_commit(
            job_channel(job_id),
            "logs",
            {"lines": [{"seq": e.seq, "level": e.level, "message": e.message} for e in entries]},
        )
    return entries
