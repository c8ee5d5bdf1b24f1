"""Log levels and the text forms of a log line.

Four levels are stored (DEBUG, INFO, WARN, ERROR); the many names trainers and
libraries use are mapped onto them. The text form is the seed's
``[HH:MM:SS] [LEVEL] message``; other common forms are recognised when reading.
"""

import json
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from django.utils import timezone
from django.utils.dateparse import parse_datetime

LEVELS = ("DEBUG", "INFO", "WARN", "ERROR")

_LEVEL_ALIASES = {
    "TRACE": "DEBUG",
    "DEBUG": "DEBUG",
    "DBG": "DEBUG",
    "VERBOSE": "DEBUG",
    "FINE": "DEBUG",
    "FINER": "DEBUG",
    "FINEST": "DEBUG",
    "INFO": "INFO",
    "INFORMATION": "INFO",
    "NOTICE": "INFO",
    "LOG": "INFO",
    "WARN": "WARN",
    "WARNING": "WARN",
    "ERROR": "ERROR",
    "ERR": "ERROR",
    "EXCEPTION": "ERROR",
    "CRITICAL": "ERROR",
    "CRIT": "ERROR",
    "FATAL": "ERROR",
    "SEVERE": "ERROR",
    "ALERT": "ERROR",
    "EMERG": "ERROR",
    "EMERGENCY": "ERROR",
    "PANIC": "ERROR",
}
# Python's numeric logging levels, as some JSON loggers emit them.
_NUMERIC_LEVELS = ((40, "ERROR"), (30, "WARN"), (20, "INFO"), (0, "DEBUG"))

_LEVEL_WORDS = "|".join(sorted(_LEVEL_ALIASES, key=len, reverse=True))
_CLOCK = r"\d{1,2}:\d{2}:\d{2}(?:[.,]\d{1,6})?"
_DATETIME = r"\d{4}-\d{2}-\d{2}[T ]" + _CLOCK + r"(?:Z|[+-]\d{2}:?\d{2})?"
# [12:00:01] [INFO] message  /  [2024-05-01 12:00:01,123] [WARNING] message  (the seed's form and its kin)
_BRACKETED = re.compile(
    rf"^\[(?P<ts>{_DATETIME}|{_CLOCK})\]\s*\[(?P<level>{_LEVEL_WORDS})\]\s?(?P<message>.*)$", re.IGNORECASE | re.DOTALL
)
# 2024-05-01T12:00:01Z ERROR message  /  12:00:01 WARN: message
_PLAIN_STAMPED = re.compile(
    rf"^(?P<ts>{_DATETIME}|{_CLOCK})\s+\[?(?P<level>{_LEVEL_WORDS})\]?:?\s(?P<message>.*)$", re.IGNORECASE | re.DOTALL
)
# [ERROR] message  /  WARNING: message  /  ERROR message
_LEVEL_FIRST = re.compile(rf"^\[(?P<level>{_LEVEL_WORDS})\]\s?(?P<message>.*)$", re.IGNORECASE | re.DOTALL)
_LEVEL_COLON = re.compile(rf"^(?P<level>{_LEVEL_WORDS}):\s(?P<message>.*)$", re.DOTALL)
# Forms whose whole text is kept, the level only detected: Python's default `WARNING:root:msg`,
# `2024-05-01 12:00:01,123 - trainer - INFO - msg`, `... | ERROR | ...`, logfmt `level=warn`.
_PYTHON_DEFAULT = re.compile(rf"^(?P<level>{_LEVEL_WORDS}):[\w.]+:", re.DOTALL)
_DELIMITED = re.compile(rf"(?:^|\s)[-|]\s(?P<level>{_LEVEL_WORDS})\s[-|]\s")
_LOGFMT = re.compile(rf"(?:^|\s)(?:level|lvl|severity)=\"?(?P<level>{_LEVEL_WORDS})\b", re.IGNORECASE)


class InvalidLine(ValueError):
    """A line that cannot be stored; the message says why."""


def normalize_level(raw, *, default: str | None = None) -> str | None:
    """Map a level name (any case) or a Python numeric level onto DEBUG/INFO/WARN/ERROR; ``default`` if unknown."""
    if isinstance(raw, bool) or raw is None:
        return default
    if isinstance(raw, int | float):
        for threshold, name in _NUMERIC_LEVELS:
            if raw >= threshold:
                return name
        return default
    if isinstance(raw, str):
        return _LEVEL_ALIASES.get(raw.strip().upper(), default)
    return default


@dataclass(frozen=True)
class ParsedLine:
    message: str
    level: str | None = None
    timestamp: datetime | None = None


def parse_text_line(text: str, *, now: datetime | None = None) -> ParsedLine:
    """Recognise a level (and a timestamp) in one line of text.

    The seed's ``[HH:MM:SS] [LEVEL] message`` and the bracketed/prefixed forms lose
    their prefix (the text form puts it back); forms where the prefix carries more
    (logger names, logfmt) keep the whole text and only give their level.
    """
    return ParsedLine(*parse_text_fields(text, now=now))


def parse_text_fields(text: str, *, now: datetime | None = None) -> tuple[str, str | None, datetime | None]:
    """``parse_text_line`` as a plain (message, level, timestamp) tuple: the ingestion hot path's form."""
    found = _recognise(text)
    if found is None:
        return text, None, None
    message, level, stamp = found
    return message, level, _parse_stamp(stamp, now=now) if stamp else None


def _recognise(text: str) -> tuple[str, str | None, str | None] | None:
    """(message, level, raw timestamp) of a recognised form, or None for plain text.

    Ingestion calls this for every unlabelled line: each pattern is tried only when a
    character test shows it could match (most lines are plain text and match none), in the
    same order as always, so the answer is the one the patterns alone would give.
    """
    first = text[:1]
    if first == "[" or first.isdigit():
        for pattern in (_BRACKETED, _PLAIN_STAMPED):
            match = pattern.match(text)
            if match:
                return match["message"], normalize_level(match["level"]), match["ts"]
    has_colon = ":" in text
    if first == "[" or (has_colon and first.isalpha()):
        for pattern in (_LEVEL_FIRST, _LEVEL_COLON):
            match = pattern.match(text)
            if match:
                return match["message"], normalize_level(match["level"]), None
    if has_colon and first.isalpha():
        match = _PYTHON_DEFAULT.match(text)
        if match:
            return text, normalize_level(match["level"]), None
    if "-" in text or "|" in text:
        match = _DELIMITED.search(text)
        if match:
            return text, normalize_level(match["level"]), None
    if "=" in text:
        match = _LOGFMT.search(text)
        if match:
            return text, normalize_level(match["level"]), None
    return None


def _parse_stamp(raw: str, *, now: datetime | None) -> datetime | None:
    raw = raw.replace(",", ".")
    if "-" in raw[:5]:
        try:
            parsed = parse_datetime(raw.replace(" ", "T", 1))
        except ValueError:
            parsed = None
        if parsed is None:
            return None
        # A runner's own clock that no column can hold: the line keeps the time it arrived.
        return _in_utc(parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed))
    # A bare clock time: today in the server's zone, or yesterday if that would lie in the future.
    try:
        clock = time.fromisoformat(raw if len(raw.split(":")[0]) == 2 else "0" + raw)
    except ValueError:
        return None
    now = timezone.localtime(now or timezone.now())
    stamp = timezone.make_aware(datetime.combine(now.date(), clock), now.tzinfo)
    if stamp - now > timedelta(minutes=5):
        stamp -= timedelta(days=1)
    return stamp


def parse_timestamp(value) -> datetime:
    """A timestamp given by a client: an aware/naive datetime, ISO 8601 text or Unix seconds."""
    if isinstance(value, datetime):
        return value if timezone.is_aware(value) else timezone.make_aware(value)
    if isinstance(value, bool):
        raise InvalidLine("timestamp must be ISO 8601 text or Unix seconds")
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise InvalidLine(f"timestamp {value!r} is out of range") from None
    if isinstance(value, str):
        try:
            parsed = parse_datetime(value.strip())
        except ValueError:
            parsed = None
        if parsed is None:
            if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
                return timezone.make_aware(datetime.combine(date.fromisoformat(value.strip()), time()))
            raise InvalidLine(f"timestamp {value!r} is not ISO 8601 (e.g. 2024-05-01T12:00:00Z)")
        stamp = _in_utc(parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed))
        if stamp is None:
            raise InvalidLine(f"timestamp {value!r} is out of range (in UTC it must fall in the years 1 to 9999)")
        return stamp
    raise InvalidLine("timestamp must be ISO 8601 text or Unix seconds")


def _in_utc(stamp: datetime) -> datetime | None:
    """The instant in UTC, or None when it falls outside the years 1-9999 there.

    "0001-01-01T00:00:00+14:00" is in year 0 in UTC and "9999-12-31T23:59:59-14:00" in year 10000:
    PostgreSQL stores the second and then cannot read it back, and refuses offsets beyond ±15:59.
    """
    try:
        return stamp.astimezone(UTC)
    except (OverflowError, ValueError):
        return None


def format_line(timestamp: datetime, level: str, message: str) -> str:
    """The seed's text form: ``[HH:MM:SS] [LEVEL] message`` (clock in the server's time zone)."""
    return f"[{timezone.localtime(timestamp):%H:%M:%S}] [{level}] {message}"


def metric_point(message: str) -> dict | None:
    """The metrics a JSON-line message carries (an object with "step", or "loss"/"epoch"), else None."""
    text = message.strip()
    if not (text.startswith("{") and text.endswith("}")):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, dict) and ("step" in value or "loss" in value or "epoch" in value):
        return value
    return None
