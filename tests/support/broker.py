"""What the tests' broker really holds: messages sent to Celery's in-memory transport, not run eagerly."""

import contextlib
from collections.abc import Iterator

from finetune_studio.celery import app


@contextlib.contextmanager
def messages_kept_in_the_broker() -> Iterator[None]:
    """Within this block ``apply_async``/``delay`` publish to the broker (memory://) instead of running inline."""
    eager = app.conf.task_always_eager
    app.conf.task_always_eager = False
    try:
        yield
    finally:
        app.conf.task_always_eager = eager


def take_messages(queue: str) -> list[tuple[str, list]]:
    """Remove and return the (task name, args) of every message waiting in ``queue``."""
    taken = []
    with app.connection_for_read() as connection:
        channel = connection.default_channel
        while (message := channel.basic_get(queue, no_ack=True)) is not None:
            args, _kwargs, _embed = message.decode()
            taken.append((message.headers["task"], list(args)))
    return taken
