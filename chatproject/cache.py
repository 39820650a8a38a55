"""The cache of a server without Redis: rate-limit counters, known login addresses, WebSocket tickets.

Django's LocMemCache holds 300 entries and, when full, throws out the oldest third whether or not
they are still live. Three hundred tickets from one account were enough to forget every failed-login
count. This one holds many more, and when full it first drops what has expired; it throws out live
entries (the oldest first) only when nearly all of them are live.
"""

import time

from django.core.cache.backends.locmem import LocMemCache

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
