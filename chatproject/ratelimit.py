"""Fixed-window rate limits on Django's cache: shared across nodes on Redis, per process otherwise.

Rates are written as chatproject.rates reads them (`10/min`, `20/10s`, `1000/h`; `0` disables a limit).
"""

import ipaddress
import logging
import math
import time
from collections import Counter

from django.core.cache import cache, caches
from django.core.cache.backends.redis import RedisCache, RedisCacheClient, RedisSerializer

from chatproject.cache import SharedPoolRedisCacheClient
from chatproject.rates import Rate, parse_rate  # noqa: F401  (imported from here by the callers)

logger = logging.getLogger("chat.ratelimit")

# After a failed call, the cache is left alone this long: limits fail open at once, so a Redis that
# hangs costs one caller its timeout (REDIS_TIMEOUT_SECONDS), not every send while it is down.
CACHE_PAUSE_SECONDS = 5.0
_cache_paused_until = 0.0


class RateLimited(Exception):
    def __init__(self, retry_after: float):
        super().__init__(f"Rate limited; retry after {retry_after:.1f}s")
        self.retry_after = retry_after

    @property
    def seconds(self) -> int:
        """Whole seconds to wait (at least 1): the `retry_after` field and the Retry-After header."""
        return max(1, math.ceil(self.retry_after))


def clock() -> float:
    """Seconds since the epoch: windows are counted from it, so every node agrees on them."""
    return time.time()


def _window(rate: Rate, now: float) -> tuple[int, float]:
    index = int(now // rate.seconds)
    return index, (index + 1) * rate.seconds - now


def _counter(scope: str, key: str, rate: Rate, index: int) -> str:
    """The cache key counting the events of `key` in the window `index` of the rate."""
    return f"rl:{scope}:{key}:{rate.seconds}:{index}"


def hit(scope: str, key: str, rate: Rate | None, *, now: float | None = None) -> None:
    """Count one event; raise RateLimited when it goes over the rate (the event is then refused)."""
    refused = hit_many(scope, [key], rate, now=now)[0]
    if refused is not None:
        raise refused


def hit_many(scope: str, keys: list[str], rate: Rate | None, *, now: float | None = None) -> list:
    """Count one event per entry of `keys`, in order (a key may repeat): for each, the RateLimited
    that refuses it, or None. One round trip to Redis for all of them."""
    if rate is None:
        return [None] * len(keys)
    now = clock() if now is None else now
    index, remaining = _window(rate, now)
    counters = [_counter(scope, key, rate, index) for key in keys]
    deltas = Counter(counters)
    # The cache (Redis) down: limits fail open, so a send is still stored, not refused.
    counts = _cache_call(f"rate limit {scope} not counted", lambda: _add_to_counters(deltas, timeout=rate.seconds + 1))
    if counts is None:
        return [None] * len(keys)
    verdicts, numbered = [], Counter()
    for counter in counters:
        numbered[counter] += 1
        number = counts[counter] - deltas[counter] + numbered[counter]  # this event's place in the window
        verdicts.append(RateLimited(retry_after=max(remaining, 0.001)) if number > rate.count else None)
    return verdicts


def _plain_redis(backend) -> bool:
    """Django's own Redis client and serializer, whose keys and integers the pipeline writes as they
    would (any other client or serializer goes through the cache API)."""
    client = getattr(backend, "_cache", None) if isinstance(backend, RedisCache) else None
    return type(client) in (RedisCacheClient, SharedPoolRedisCacheClient) and (
        type(getattr(client, "_serializer", None)) is RedisSerializer
    )


def _add_to_counters(deltas: dict[str, int], *, timeout: int) -> dict[str, int]:
    """Add each delta to its counter, which then expires `timeout` s later; the new counts.

    On Redis in one transaction, one round trip: the cache API takes three per counter (add, then
    incr, which first checks that the key exists). The keys are the cache's own (prefix, version),
    so `peek` reads them through the cache API. A counter's name holds its window, so its expiry
    only clears it away; each count sets the expiry again (`INCRBY`, then `EXPIRE`). Creating it
    with an expiry first (`SET NX EX`, then `INCRBY`) could leave it without one: before 7.0,
    Redis reads its clock anew for each command of a transaction, so the key could expire between
    the two and `INCRBY` create it again, to be kept forever. Through the cache API, `incr` checks
    that the key exists and then increments it, the same hazard on Redis: `touch` sets the expiry
    again after each count there too.
    """
    backend = caches["default"]
    if _plain_redis(backend):
        keys = {key: backend.make_and_validate_key(key) for key in deltas}
        with backend._cache.get_client(write=True).pipeline(transaction=True) as pipe:
            for key, delta in deltas.items():
                pipe.incrby(keys[key], delta)
                pipe.expire(keys[key], timeout)
            replies = pipe.execute()
        return {key: int(replies[2 * n]) for n, key in enumerate(deltas)}
    counts = {}
    for key, delta in deltas.items():
        backend.add(key, 0, timeout=timeout)
        try:
            counts[key] = backend.incr(key, delta)
        except ValueError:  # expired between add and incr
            backend.set(key, delta, timeout=timeout)
            counts[key] = delta
        else:
            backend.touch(key, timeout)
    return counts


def peek(scope: str, key: str, rate: Rate | None, *, now: float | None = None) -> float | None:
    """Seconds until the limit lifts when it is exhausted now, else None (counts nothing)."""
    if rate is None:
        return None
    now = clock() if now is None else now
    index, remaining = _window(rate, now)
    count = _cache_call(f"rate limit {scope} not read", lambda: cache.get(_counter(scope, key, rate, index), 0))
    if count is None:
        return None
    return max(remaining, 0.001) if count >= rate.count else None


def _cache_call(failure: str, call):
    """`call()`, a call to the cache; None when it fails, logged as `failure`, and then None at once,
    without a call, for CACHE_PAUSE_SECONDS."""
    global _cache_paused_until
    if time.monotonic() < _cache_paused_until:
        return None
    try:
        return call()
    except Exception:
        _cache_paused_until = time.monotonic() + CACHE_PAUSE_SECONDS
        logger.warning(
            "%s (cache unavailable); the cache is left alone for %g s", failure, CACHE_PAUSE_SECONDS, exc_info=True
        )
        return None


def _in(address: str, networks: list[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    for network in networks:
        try:
            if ip in ipaddress.ip_network(network, strict=False):
                return True
        except ValueError:
            continue
    return False


def client_ip(meta: dict, trusted_proxies: list[str]) -> str:
    """The client's address: the socket's peer, unless the peer is a trusted proxy.

    Behind trusted proxies, X-Forwarded-For is read from the right and the first address that
    is not a trusted proxy is the client: the hops a client wrote itself are never believed.
    """
    peer = meta.get("REMOTE_ADDR") or ""
    if not _in(peer, trusted_proxies):
        return peer
    hops = [hop.strip() for hop in meta.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _in(hop, trusted_proxies):
            return hop
    return hops[0] if hops else peer


def remember(key: str, seconds: int) -> None:
    """Note a fact in the cache for a while; skipped when the cache is down."""
    _cache_call(f"{key.split(':', 1)[0]} not remembered", lambda: cache.set(key, True, seconds))


def remembers(key: str) -> bool:
    """Whether the cache holds the fact; False when the cache is down."""
    return bool(_cache_call(f"{key.split(':', 1)[0]} not read", lambda: cache.get(key)))
