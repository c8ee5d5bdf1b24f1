import pytest
from django.conf import settings as django_settings

from finetune_studio.objects import reset_bucket_cache
from tests.support.faultproxy import FaultProxy

from .world import build_world


@pytest.fixture
def world(alice):
    return build_world(alice)


@pytest.fixture
def storage_spy(settings, s3_buckets):
    """Route every S3 call through a FaultProxy from now on: ``storage_spy.connections`` counts them.

    The bucket objects are rebuilt with fresh boto3 clients, so no pooled connection bypasses the
    proxy: zero connections means no storage call at all.
    """
    host, port = django_settings.S3_ENDPOINT_URL.removeprefix("http://").split(":")
    proxy = FaultProxy(host, int(port)).start()
    settings.S3_ENDPOINT_URL = proxy.url
    settings.S3_PUBLIC_ENDPOINT_URL = proxy.url
    settings.STORAGES = {
        alias: (
            {**config, "OPTIONS": {**config["OPTIONS"], "endpoint_url": proxy.url}}
            if alias in django_settings.BUCKETS
            else config
        )
        for alias, config in django_settings.STORAGES.items()
    }
    reset_bucket_cache()
    yield proxy
    proxy.stop()
    reset_bucket_cache()
