"""Filters of log lines (level, time range, text), applied in the database or to archived lines alike."""

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Q


@dataclass(frozen=True)
class LogFilter:
    levels: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    text: str = ""

    def matches(self, line: dict) -> bool:
        if self.levels and line["level"] not in self.levels:
            return False
        stamp = line["timestamp"]
        if self.since and stamp < self.since:
            return False
        if self.until and stamp > self.until:
            return False
        return not self.text or self.text.lower() in line["message"].lower()

    def as_q(self) -> Q:
        q = Q()
        if self.levels:
            q &= Q(level__in=self.levels)
        if self.since:
            q &= Q(timestamp__gte=self.since)
        if self.until:
            q &= Q(timestamp__lte=self.until)
        if self.text:
            q &= Q(message__icontains=self.text)
        return q


NO_FILTER = LogFilter()
