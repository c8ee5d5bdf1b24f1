"""Live events pushed to pages through django-eventstream: channel kinds, payloads, publishing.

A channel is ``<kind>-<id>``. Each app registers the kinds it publishes on and who may read
them (``register_channel``); the core knows none of the apps. The core's own kind:

- ``user-<id>``: everything a user's pages show live (``job``, ``model`` and ``evaluation``
  events). Only that user may read it.

Every event on the user channel is built by ``event_payload``: the keys ``id``, ``action``,
``job_id``, ``model_id`` and ``url`` are always there (None when they do not apply), so a page
script reads them the same way whatever the event type; each app adds its own fields.

Events are always published after the transaction that wrote their rows commits.
"""

import logging
from collections.abc import Callable

from django.db import transaction
from django_eventstream import send_event
from django_eventstream.channelmanager import DefaultChannelManager

logger = logging.getLogger(__name__)

# kind -> can_read(user, object_id): whether an authenticated user may read ``<kind>-<object_id>``.
_CHANNEL_READERS: dict[str, Callable[..., bool]] = {}


def register_channel(kind: str, can_read: Callable[..., bool]) -> None:
    """Declare the channel kind ``kind`` and who may read it (called from an app's ``ready()``)."""
    if "-" in kind or not kind:
        raise ValueError(f"a channel kind is a word without '-', not {kind!r}")
    known = _CHANNEL_READERS.get(kind)
    if known is not None and known is not can_read:
        raise ValueError(f"the channel kind {kind!r} is already registered")
    _CHANNEL_READERS[kind] = can_read


def channel_name(kind: str, object_id: int) -> str:
    return f"{kind}-{object_id}"


def user_channel(user_id: int) -> str:
    return channel_name("user", user_id)


register_channel("user", lambda user, user_id: user_id == user.id)


def event_payload(
    *,
    id: int,
    action: str,
    job_id: int | None = None,
    model_id: int | None = None,
    url: str | None = None,
    **fields,
) -> dict:
    """The data of a user-channel event: the shared keys first, then the app's own fields."""
    return {"id": id, "action": action, "job_id": job_id, "model_id": model_id, "url": url, **fields}


def publish_event(channel: str, event_type: str, data: dict) -> None:
    """Send now. A broken fan-out (Redis down) is logged: the rows are already safe in the database."""
    try:
        send_event(channel, event_type, data)
    except Exception:
        logger.exception("Publishing %s on %s failed; clients will catch up from the database", event_type, channel)


def publish_event_on_commit(channel: str, event_type: str, data: dict) -> None:
    transaction.on_commit(lambda: publish_event(channel, event_type, data))


class StudioChannelManager(DefaultChannelManager):
    """Reads are allowed by the registered kinds only; an unknown kind or a malformed name is refused."""

    def can_read_channel(self, user, channel: str) -> bool:
        if user is None or not user.is_authenticated:
            return False
        kind, _, raw_id = channel.partition("-")
        can_read = _CHANNEL_READERS.get(kind)
        if can_read is None or not raw_id.isdigit():
            return False
        return bool(can_read(user, int(raw_id)))
