"""Rate limits that fail open: with the cache (Redis) down they are skipped, not turned into 500s.

A throttle protects the service; refusing every request because its counter is unreachable would
turn a Redis outage into a whole-API outage, log ingestion included. Kept out of ``api.py``:
DRF resolves DEFAULT_THROTTLE_CLASSES while ``rest_framework.views`` is being imported.
"""

import logging

import redis
from rest_framework.throttling import AnonRateThrottle, UserRateThrottle

logger = logging.getLogger(__name__)


class _FailOpenThrottle:
    def allow_request(self, request, view):
        try:
            return super().allow_request(request, view)
        except (redis.RedisError, OSError) as exc:
            logger.warning("Rate limit not checked (cache unavailable: %s)", exc.__class__.__name__)
            return True


class StudioUserRateThrottle(_FailOpenThrottle, UserRateThrottle):
    pass


class StudioAnonRateThrottle(_FailOpenThrottle, AnonRateThrottle):
    pass
