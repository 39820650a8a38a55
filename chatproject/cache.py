"""The cache backends: rate-limit counters, known login addresses, WebSocket tickets.

Without Redis, LocalCache. Django's LocMemCache holds 300 entries and, when full, throws out the
oldest third whether or not they are still live. Three hundred tickets from one account were enough
to forget every failed-login count. This one holds many more, and when full it first drops what has
expired; it throws out live entries (the oldest first) only when nearly all of them are live.

With Redis, RedisCache: Django's, with one connection pool per process. Django keeps a cache object
per thread, each with a pool of its own that is closed only when the garbage collector gets to it.
Logins and registrations run on a thread of their own each (chatproject.handler), so every one of
them left a Redis connection open: 250 logins held 184 connections of one process.
"""

import threading
import time

from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient

MAX_ENTRIES = 100_000  # a few hundred bytes each: some tens of MiB when full


class LocalCache(LocMemCache):
    def __init__(self, name, params):
        options = params.get("OPTIONS") or {}
        super().__init__(name, {**params, "OPTIONS": {"MAX_ENTRIES": MAX_ENTRIES, **options}})

    def _cull(self):
        # Called with the cache's lock held, when an entry is added to a full cache.
        now = time.time()
        for key in [key for key, expiry in self._expire_info.items() if expiry is not None and expiry <= now]:
            self._delete(key)
        if len(self._cache) >= self._max_entries * 9 // 10:
            super()._cull()


class SharedPoolRedisCacheClient(RedisCacheClient):
    """Django's client, taking its connection pools from one per process (redis-py's pools are
    thread-safe)."""

    _shared_pools: dict = {}
    _shared_lock = threading.Lock()

    def _get_connection_pool(self, write):
        index = self._get_connection_pool_index(write)
        key = (self._servers[index], repr(sorted(self._pool_options.items())))
        with self._shared_lock:
            pool = self._shared_pools.get(key)
            if pool is None:
                pool = self._shared_pools[key] = self._pool_class.from_url(self._servers[index], **self._pool_options)
        return pool


class RedisCache(DjangoRedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = SharedPoolRedisCacheClient
