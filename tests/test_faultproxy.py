"""The fault proxy itself: it must pass traffic when healthy and really break it when told."""

import pytest
import requests

from tests.support.faultproxy import FaultProxy


def test_it_passes_traffic_then_resets_mid_response_then_heals(s3_buckets):
    host, port = s3_buckets.removeprefix("http://").split(":")
    with FaultProxy(host, int(port)) as proxy:
        assert requests.get(f"{proxy.url}/moto-api/", timeout=5).status_code == 200
        proxy.reset_after = 100
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"{proxy.url}/moto-api/", timeout=5)
        proxy.heal()
        assert requests.get(f"{proxy.url}/moto-api/", timeout=5).status_code == 200
        assert proxy.resets == 1


def test_refused_connections_fail_fast(s3_buckets):
    host, port = s3_buckets.removeprefix("http://").split(":")
    with FaultProxy(host, int(port)) as proxy:
        proxy.refuse = True
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"{proxy.url}/moto-api/", timeout=5)
