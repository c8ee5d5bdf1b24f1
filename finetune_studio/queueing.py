"""What a refused enqueue raises: the broker's errors, told apart from the errors of a task run in-process.

Each app has one enqueue helper that catches exactly these, fails its row with the reason and says
so; anything else (a bug, or the error of a task that ran eagerly in tests) propagates.
"""

import kombu.exceptions
import redis.exceptions

BROKER_ERRORS: tuple[type[BaseException], ...] = (
    kombu.exceptions.OperationalError,  # kombu re-raises a transport's connection errors as this
    kombu.exceptions.ConnectionError,
    kombu.exceptions.TimeoutError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionError,
    TimeoutError,
)
