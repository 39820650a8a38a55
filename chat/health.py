"""Checks for GET /healthz: the database answers a query, the channel layer carries a message."""

import asyncio
import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection

logger = logging.getLogger("chat.health")
TIMEOUT_SECONDS = 2.0


def database_ok() -> bool:
    """A query answered; with PostgreSQL's pool, a connection had within TIMEOUT_SECONDS (not the pool's
    own timeout, often longer than a load balancer waits for its probe)."""
    try:
        pool = getattr(connection, "pool", None)
        if pool is not None:
            pool.open()  # as Django does before its first connection; no-op once open
            with pool.connection(timeout=TIMEOUT_SECONDS) as pooled:
                return pooled.execute("SELECT 1").fetchone() == (1,)
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)
    except Exception:
        logger.warning("health: database check failed", exc_info=True)
        return False


async def _layer_round_trip() -> bool:
    layer = get_channel_layer()
    channel = await layer.new_channel("healthz.")
    await layer.send(channel, {"type": "healthz.ping"})
    received = await layer.receive(channel)
    return received.get("type") == "healthz.ping"


def _redis_ping() -> bool:
    import redis

    client = redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=TIMEOUT_SECONDS, socket_connect_timeout=TIMEOUT_SECONDS
    )
    try:
        return bool(client.ping())
    finally:
        client.close()


def channel_layer_ok() -> bool:
    """The in-process layer carries a round trip; a Redis-backed one needs its Redis to answer."""
    if settings.REDIS_URL:
        # A round trip through the pub/sub layer would leave a subscription behind per check.
        try:
            return _redis_ping()
        except Exception:
            logger.warning("health: Redis check failed", exc_info=True)
            return False

    async def check() -> bool:
        return await asyncio.wait_for(_layer_round_trip(), TIMEOUT_SECONDS)

    try:
        return async_to_sync(check)()
    except Exception:
        logger.warning("health: channel layer check failed", exc_info=True)
        return False
