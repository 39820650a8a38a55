import itertools
import threading
import time

import pytest
import redis
from django.core.cache import caches
from django.test import override_settings

from chatproject import cache as local_cache
from chatproject.cache import LocalCache

REDIS_CACHE_DB = "redis://127.0.0.1:6379/6"

counter = itertools.count()


def make_cache(max_entries: int) -> LocalCache:
    # Each LocMemCache name is one store shared by its instances: a fresh name per test.
    return LocalCache(f"test-{next(counter)}", {"OPTIONS": {"MAX_ENTRIES": max_entries}})


def test_it_holds_a_hundred_thousand_entries_by_default():
    assert LocalCache(f"test-{next(counter)}", {})._max_entries == local_cache.MAX_ENTRIES == 100_000


def test_a_full_cache_drops_what_has_expired_and_keeps_every_live_entry(monkeypatch):
    now = [1_000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])  # the clock of expiries, Django's and the cull's
    cache = make_cache(20)
    cache.set_many({f"live-{n}": n for n in range(10)}, timeout=900)  # oldest first: LocMemCache's cull victims
    cache.set_many({f"ticket-{n}": n for n in range(10)}, timeout=30)
    now[0] += 31

    cache.set_many({f"new-{n}": n for n in range(8)}, timeout=900)

    assert cache.get_many([f"live-{n}" for n in range(10)]) == {f"live-{n}": n for n in range(10)}
    assert cache.get_many([f"new-{n}" for n in range(8)]) == {f"new-{n}": n for n in range(8)}
    assert len(cache._cache) == 18


def test_live_entries_go_oldest_first_only_when_nearly_all_are_live():
    cache = make_cache(20)
    cache.set_many({f"live-{n}": n for n in range(20)}, timeout=900)

    cache.set("one-more", 1, timeout=900)

    assert cache.get("one-more") == 1
    assert cache.get("live-0") is None  # LocMemCache's own cull: the oldest third
    assert cache.get("live-19") == 19


def test_every_thread_of_a_process_shares_one_redis_connection_pool():
    try:
        redis.Redis.from_url(REDIS_CACHE_DB, socket_connect_timeout=1).ping()
    except redis.RedisError:
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    pools = []

    def on_a_thread_of_its_own():  # as a login runs (chatproject.handler)
        cache = caches["default"]
        cache.get("anything")
        pools.append(cache._cache._get_connection_pool(write=True))

    settings = {"default": {"BACKEND": "chatproject.cache.RedisCache", "LOCATION": REDIS_CACHE_DB, "KEY_PREFIX": "t"}}
    with override_settings(CACHES=settings):
        for _ in range(5):  # one after another: each finds the connection the one before left
            thread = threading.Thread(target=on_a_thread_of_its_own)
            thread.start()
            thread.join()

    assert len(pools) == 5
    assert len({id(pool) for pool in pools}) == 1
    assert len(pools[0]._available_connections) + len(pools[0]._in_use_connections) == 1
