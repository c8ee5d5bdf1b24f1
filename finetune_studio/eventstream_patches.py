"""Every change this studio makes to django-eventstream, in one place, applied from the core's ``ready()``.

The library serves the user event streams (``/events/``) and fans out every event, log batches
included. Each change below says why it exists; all of them follow django-eventstream 5.3's code
and are applied only to 5.3.x (``SUPPORTED``): another version keeps its own behaviour, with a
warning, until the changes are checked against it. They are small on purpose, to be offered upstream.

1. ``MAX_PENDING``: an open stream may queue LOG_STREAM_LISTENER_PENDING events instead of 10
   before it is flagged "overflow" and re-reads from storage (a burst of log batches is normal).
2. ``Listener.wake_threadsafe``: waking a listener from its own event loop (the Redis subscriber
   runs there) sets its ``asyncio.Event`` directly; ``call_soon_threadsafe`` wrote to the loop's
   self-pipe once per listener per event. Wakes from other threads (standalone mode's worker) still
   go through it.
3. ``views.stream`` becomes ``lean_stream``: the same protocol with less work per event (no task,
   waiter and timer per wait; bodies joined once).
4. ``ListenerManager.start_redis_listener``: the library starts its Redis subscriber once and,
   when Redis drops the connection, never again, so a web process would stop delivering live events
   for good after a Redis restart. Ours subscribes again, and each new subscription makes the open
   streams catch up from storage (``on_redis_subscribed`` callbacks, the library's listeners flagged).
5. The Redis channel: events go through EVENTS_REDIS_CHANNEL instead of the library's fixed
   ``events_channel``. Pub/sub ignores database numbers, so two studios (or a test run and a
   benchmark) on one Redis server would otherwise deliver each other's events, log lines included.

``publish_encoded`` sends an already-encoded event with its own id (the log batches: the rows are
their storage) through the same fan-out.
"""

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from importlib.metadata import version

import orjson
from asgiref.sync import sync_to_async
from django.conf import settings
from django_eventstream.event import Event

logger = logging.getLogger(__name__)

SUPPORTED = "5.3."

_RESUBSCRIBE_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)

_subscribers: set[asyncio.Task] = set()

# Called (on the subscriber's event loop) each time the Redis subscription is (re)established:
# events published while it was down never arrive, so whoever relies on them catches up.
_on_subscribed: list[Callable[[], None]] = []


def on_redis_subscribed(callback: Callable[[], None]) -> None:
    _on_subscribed.append(callback)


def publish_encoded(channel: str, event_type: str, payload: str, event_id: int) -> None:
    """Send an already-encoded event on ``channel`` with the given id (no storage write: the caller's rows are it).

    Through Redis pub/sub to every web process when EVENTSTREAM_REDIS is set, else to this process's
    listeners. A failed fan-out is logged, not raised: the rows are committed and clients catch up from them.
    """
    from django_eventstream import eventstream
    from django_eventstream.views import get_listener_manager

    try:
        if eventstream.redis_client is not None:
            message = {"channel": channel, "event_type": event_type, "data": payload, "pub_id": str(event_id)}
            eventstream.redis_client.publish(settings.EVENTS_REDIS_CHANNEL, orjson.dumps(message))
        else:
            get_listener_manager().add_to_queues(channel, Event(channel, event_type, payload, id=event_id))
    except Exception:
        logger.exception(
            "Publishing %s #%s on %s failed; clients will catch up from the table", event_type, event_id, channel
        )


def apply() -> bool:
    """Apply the changes (idempotent); False, with a warning, on a library version they were not written for."""
    installed = version("django-eventstream")
    if not installed.startswith(SUPPORTED):
        logger.warning(
            "django-eventstream %s: the studio's changes (written for %sx) are not applied; "
            "the library's own stream loop and Redis subscriber are used",
            installed,
            SUPPORTED,
        )
        return False
    from django_eventstream import eventstream, views

    views.MAX_PENDING = max(views.MAX_PENDING, settings.LOG_STREAM_LISTENER_PENDING)  # 1
    views.Listener.wake_threadsafe = _wake_listener  # 2
    views.stream = lean_stream  # 3
    views.ListenerManager.start_redis_listener = _supervised_redis_listener  # 4
    if eventstream.redis_client is not None and not isinstance(eventstream.redis_client, _OurChannel):  # 5
        eventstream.redis_client = _OurChannel(eventstream.redis_client)
    return True


def _wake_listener(listener) -> None:
    try:
        on_its_loop = asyncio.get_running_loop() is listener.loop
    except RuntimeError:
        on_its_loop = False
    if on_its_loop:
        listener.aevent.set()
    else:
        listener.loop.call_soon_threadsafe(listener.aevent.set)


class _OurChannel:
    """The library's Redis client, publishing on EVENTS_REDIS_CHANNEL whatever channel it is asked for."""

    def __init__(self, client) -> None:
        self.client = client

    def publish(self, channel, message):
        return self.client.publish(settings.EVENTS_REDIS_CHANNEL, message)

    def __getattr__(self, name):
        return getattr(self.client, name)


async def _supervised_redis_listener(manager) -> None:
    """The library's Redis subscriber (on EVENTS_REDIS_CHANNEL), subscribed again whenever its connection drops.

    Pub/sub delivers at most once: what was published while the subscription was down is gone.
    After each subscription the library's listeners are flagged "overflow" (they re-read their
    channels from storage) and ``on_redis_subscribed`` callbacks run (log streams re-read the table).
    """
    from redis.asyncio import Redis

    # The library starts this task without keeping it: the event loop holds tasks weakly, and a
    # garbage collection ended the subscription (and every live stream) in the middle of a run.
    _subscribers.add(asyncio.current_task())
    failures = 0
    while True:
        client = Redis(**settings.EVENTSTREAM_REDIS)
        subscription = client.pubsub()
        try:
            await subscription.subscribe(settings.EVENTS_REDIS_CHANNEL)
            failures = 0
            _catch_up_after_subscribing(manager)
            async for message in subscription.listen():
                if message["type"] == "message":
                    _deliver(manager, message["data"])
            raise ConnectionError("the subscription ended")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            pause = _RESUBSCRIBE_DELAYS[min(failures, len(_RESUBSCRIBE_DELAYS) - 1)]
            failures += 1
            logger.warning("Live events: the Redis subscription dropped (%s); subscribing again in %.1f s", exc, pause)
        finally:
            try:
                await client.aclose()
            except Exception as exc:
                logger.debug("Closing the dropped Redis subscriber failed: %s", exc)
        await asyncio.sleep(pause)


def _deliver(manager, raw: bytes) -> None:
    """One published event to this process's listeners (the library's message format)."""
    try:
        message = orjson.loads(raw)
        event = Event(message["channel"], message["event_type"], message["data"], id=message["pub_id"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        logger.warning("Live events: a malformed message on %s was ignored", settings.EVENTS_REDIS_CHANNEL)
        return
    manager.add_to_queues(event.channel, event)


def _catch_up_after_subscribing(manager) -> None:
    with manager.lock:
        listeners = {listener for group in manager.listeners_by_channel.values() for listener in group}
        for listener in listeners:
            if not getattr(listener, "catches_up_itself", False):
                listener.overflow = True
                listener.wake_threadsafe()
    for callback in _on_subscribed:
        try:
            callback()
        except Exception:
            logger.exception("A catch-up after subscribing to Redis failed")


_KEEP_ALIVE = "event: keep-alive\ndata:\n\n"
_PADDING = ":" + " " * 2048 + "\n\n"


async def lean_stream(event_request, listener) -> AsyncIterator[str]:
    """django-eventstream 5.3's ``views.stream`` with the same protocol and less work per event.

    The library's loop creates a task, a waiter and a 20 s timer (``asyncio.wait``) every time a
    listener waits for its next event, and builds each body by string concatenation. Here a
    listener waits on its event under ``asyncio.timeout`` (no task), bodies are joined once,
    and reading from storage (first read, ``more``, overflow, items queued during a read) is unchanged.
    Job log streams do not use it (they have their own loop, ``logs_app.streaming``); the user event streams do.
    """
    from django_eventstream.eventstream import EventPermissionError, get_events
    from django_eventstream.utils import make_id, sse_encode_error, sse_encode_event
    from django_eventstream.views import get_listener_manager

    read_events = sync_to_async(get_events)
    listener.assign_loop()
    manager = get_listener_manager()
    manager.add_listener(listener)
    try:
        first = True
        while True:
            try:
                response = await read_events(event_request)
            except EventPermissionError as exc:
                yield sse_encode_error("forbidden", str(exc), extra={"channels": exc.channels})
                return
            last_ids = dict(response.channel_last_ids)
            body = []
            if first:
                first = False
                body.append(_PADDING + "event: stream-open\ndata:\n\n")
            if response.channel_reset:
                reset = {"channels": list(response.channel_reset)}
                body.append(sse_encode_event("stream-reset", reset, event_id=make_id(last_ids), json_encode=True))
            for channel, items in response.channel_items.items():
                for item in items:
                    last_ids[channel] = item.id
                    body.append(sse_encode_event(item.type, item.data, event_id=make_id(last_ids)))
            yield "".join(body)
            if response.channel_more:
                continue
            with manager.lock:
                # Items queued while reading from storage: drop them and read again (as the library does).
                conflict = bool(listener.channel_items)
                if conflict:
                    listener.aevent.clear()
                    listener.channel_items = {}
            if conflict:
                continue
            while True:  # caught up: live events
                if not listener.aevent.is_set():
                    try:
                        async with asyncio.timeout(settings.LOG_STREAM_KEEP_ALIVE_SECONDS):
                            await listener.aevent.wait()
                    except TimeoutError:
                        yield _KEEP_ALIVE
                        continue
                with manager.lock:
                    channel_items, overflow, error = listener.channel_items, listener.overflow, listener.error
                    listener.aevent.clear()
                    listener.channel_items = {}
                    listener.overflow = False
                body = []
                for channel, items in channel_items.items():
                    for item in items:
                        if channel in last_ids:
                            if item.id is not None:
                                last_ids[channel] = item.id
                            else:
                                del last_ids[channel]
                        body.append(sse_encode_event(item.type, item.data, event_id=make_id(last_ids) or None))
                if error:
                    # Kicked (access lost): say so, then read again, where the permission check ends the stream.
                    body.append(sse_encode_error(error["condition"], error["text"], extra=error.get("extra")))
                    yield "".join(body)
                    break
                if body:
                    yield "".join(body)
                if overflow:
                    break  # past the queue's limit (or the Redis subscription was renewed): read from storage
            event_request.channel_last_ids = last_ids
    finally:
        listener.aevent.set()
        manager.remove_listener(listener)
