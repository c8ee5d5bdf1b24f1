"""Django's Redis cache with one connection pool per process."""

import threading

import redis


class SharedConnectionPool(redis.ConnectionPool):
    """The connection pool of Django's Redis cache, shared by every cache client of the process.

    Under ASGI Django builds a cache client, with a pool of its own, in each request's context:
    every request opened a new Redis connection (the rate limiter reads the cache), and an open
    SSE stream kept its connection for as long as it ran: 1,000 streams, 1,000 idle connections.
    """

    _shared: dict[tuple, "SharedConnectionPool"] = {}
    _lock = threading.Lock()

    @classmethod
    def from_url(cls, url, **options):
        key = (url, tuple(sorted((name, repr(value)) for name, value in options.items())))
        with cls._lock:
            if key not in cls._shared:
                cls._shared[key] = super().from_url(url, **options)
            return cls._shared[key]
