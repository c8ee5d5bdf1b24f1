import pytest
from django.core.cache.backends.redis import RedisCache


@pytest.mark.redis
def test_cache_clients_of_many_requests_share_one_connection_pool(redis_url):
    import redis

    options = {"OPTIONS": {"socket_timeout": 2, "pool_class": "finetune_studio.cache.SharedConnectionPool"}}
    server = redis.Redis.from_url(redis_url)
    before = len(server.client_list())
    # What Django does under ASGI: a new cache object in each request's context.
    caches = [RedisCache(redis_url, options) for _ in range(20)]
    for number, cache in enumerate(caches):
        cache.set(f"key-{number}", number)
    assert [cache.get(f"key-{number}") for number, cache in enumerate(caches)] == list(range(20))
    assert len({id(cache._cache._get_connection_pool(write=True)) for cache in caches}) == 1
    assert len(server.client_list()) - before <= 1
