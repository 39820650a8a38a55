"""Cluster-wide presence in Redis, with heartbeats and TTLs so a dead node leaves no ghosts.

Per room: a sorted set of user ids scored by when their newest socket entry expires, a hash of
their usernames, and per (room, user) a sorted set of channel names scored by expiry. Each node
refreshes the entries of its own sockets every ttl/3 and sweeps expired users out of every room,
broadcasting their `leave`; the sweep runs in a Lua script, so exactly one node announces each
departure. Scores are wall-clock seconds: nodes need clocks in sync to well under the TTL (NTP does it).

Only rooms with someone in them are kept: a room's usernames and its entry in the rooms hash (what
the sweep walks) go in the same script that takes its last user out, so neither grows with every
room or user ever seen.

Redis being down never fails a connection: reads answer "nobody", writes are skipped and logged.
"""

import asyncio
import logging
import time

import redis
import redis.asyncio as aioredis

from chat.presence import TooManySockets
from chatproject.logs import no_log_context

logger = logging.getLogger("chat.presence")

_CONNECT = """
local limit = tonumber(ARGV[9])
if limit > 0 and redis.call('ZCOUNT', KEYS[5], ARGV[1], '+inf') >= limit then return -1 end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local live = redis.call('ZCARD', KEYS[1])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[7])
redis.call('ZADD', KEYS[2], 'GT', ARGV[2], ARGV[4])
redis.call('HSET', KEYS[3], ARGV[4], ARGV[5])
redis.call('HSET', KEYS[4], ARGV[6], ARGV[8])
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', ARGV[1])
redis.call('ZADD', KEYS[5], ARGV[2], ARGV[3])
redis.call('EXPIRE', KEYS[5], ARGV[7])
if live == 0 then return 1 end
return 0
"""

_DISCONNECT = """
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('ZREM', KEYS[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local last = 0
if redis.call('ZCARD', KEYS[1]) == 0 then
  last = redis.call('ZREM', KEYS[2], ARGV[3])
  redis.call('HDEL', KEYS[4], ARGV[3])
  if redis.call('ZCARD', KEYS[2]) == 0 then redis.call('HDEL', KEYS[5], ARGV[4]) end
end
return last
"""

# Returns 1 when the user was not in the room (swept out while this node was stalled, or Redis lost
# its keys): the heartbeat puts them back, and their join must be announced again.
_HEARTBEAT = """
local absent = not redis.call('ZSCORE', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], 'GT', ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[3], ARGV[4])
redis.call('HSET', KEYS[4], ARGV[3], ARGV[5])
redis.call('HSET', KEYS[5], ARGV[6], ARGV[7])
if absent then return 1 end
return 0
"""

# Returns id, username, id, username... of the users whose every socket entry in the room has
# expired, removing them (and the room from the rooms hash once nobody is left in it).
_SWEEP = """
local gone = {}
for _, uid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])) do
  local sockets = ARGV[2] .. uid
  redis.call('ZREMRANGEBYSCORE', sockets, '-inf', ARGV[1])
  local newest = redis.call('ZRANGE', sockets, -1, -1, 'WITHSCORES')
  if newest[2] then
    redis.call('ZADD', KEYS[1], newest[2], uid)
  else
    redis.call('ZREM', KEYS[1], uid)
    table.insert(gone, uid)
    table.insert(gone, redis.call('HGET', KEYS[2], uid) or '')
    redis.call('HDEL', KEYS[2], uid)
  end
end
if redis.call('ZCARD', KEYS[1]) == 0 then redis.call('HDEL', KEYS[3], ARGV[3]) end
return gone
"""


class RedisPresence:
    shared = True  # every process of the deployment reads the same presence

    def __init__(self, *, url: str, prefix: str, ttl: int, timeout: float = 2.0) -> None:
        self.url = url
        self.prefix = f"{prefix}:presence"
        self.ttl = ttl
        self.timeout = timeout
        self._sync = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._loop = None
        self._client: aioredis.Redis | None = None
        self._heartbeat: asyncio.Task | None = None
        # The sockets a running heartbeat read from _local, and its end: a socket of those closing
        # meanwhile is removed after the heartbeat has written it, never before (which would put a
        # closed socket back and announce a false join). Other closes do not wait, nor do closes
        # wait for each other.
        self._refreshing_channels: frozenset[str] = frozenset()
        self._refreshed: asyncio.Event | None = None
        # channel name -> (room id, room name, user id, username): this node's sockets, refreshed
        # (names included, so a restarted, empty Redis learns them again) by the heartbeat
        self._local: dict[str, tuple[int, str, int, str]] = {}

    # --- keys -----------------------------------------------------------------------------

    def _users_key(self, room_id: int) -> str:
        return f"{self.prefix}:{room_id}:users"

    def _sockets_key(self, room_id: int, user_id: int) -> str:
        return f"{self.prefix}:{room_id}:u:{user_id}"

    def _user_key(self, user_id: int) -> str:
        return f"{self.prefix}:conn:{user_id}"

    def _names_key(self, room_id: int) -> str:
        return f"{self.prefix}:{room_id}:names"

    @property
    def _rooms_key(self) -> str:
        return f"{self.prefix}:rooms"

    def _socket_keys(self, room_id: int, user_id: int) -> list[str]:
        """The keys a socket's heartbeat and disconnect scripts touch, in their KEYS order."""
        return [
            self._sockets_key(room_id, user_id),
            self._users_key(room_id),
            self._user_key(user_id),
            self._names_key(room_id),
            self._rooms_key,
        ]

    def _redis(self) -> aioredis.Redis:
        """One asyncio client per event loop (clients are bound to the loop that made them)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop = loop
            self._client = aioredis.Redis.from_url(
                self.url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout
            )
            self._connect_script = self._client.register_script(_CONNECT)
            self._disconnect_script = self._client.register_script(_DISCONNECT)
            self._heartbeat_script = self._client.register_script(_HEARTBEAT)
            self._sweep_script = self._client.register_script(_SWEEP)
            self._refreshing_channels, self._refreshed = frozenset(), None
            self._heartbeat = None
        if self._heartbeat is None or self._heartbeat.done():
            with no_log_context():
                self._heartbeat = loop.create_task(self._beat_forever(), name="presence-heartbeat")
        return self._client

    # --- the interface ------------------------------------------------------------------

    async def connect(
        self, *, room_id: int, room_name: str, user_id: int, username: str, channel: str, limit: int = 0
    ) -> bool:
        """Record a socket; True when it is the user's first live one in the room, cluster-wide.
        TooManySockets when the user already has `limit` live sockets on every node (0: no limit),
        counted and recorded in one script, so sockets connecting at once cannot all pass."""
        client = self._redis()
        now = time.time()
        try:
            first = await self._connect_script(
                keys=[
                    self._sockets_key(room_id, user_id),
                    self._users_key(room_id),
                    self._names_key(room_id),
                    self._rooms_key,
                    self._user_key(user_id),
                ],
                args=[now, now + self.ttl, channel, user_id, username, room_id, self.ttl * 2, room_name, limit],
                client=client,
            )
        except redis.RedisError:
            logger.warning("presence: connect not recorded (Redis unavailable)", exc_info=True)
            self._local[channel] = (room_id, room_name, user_id, username)  # the heartbeat records it later
            return False
        if first == -1:
            raise TooManySockets
        self._local[channel] = (room_id, room_name, user_id, username)
        return bool(first)

    async def disconnect(self, *, room_id: int, user_id: int, channel: str) -> bool:
        """Forget a socket; True when it was the user's last live one in the room, cluster-wide."""
        self._local.pop(channel, None)
        client = self._redis()
        try:
            if channel in self._refreshing_channels and self._refreshed is not None:
                await self._refreshed.wait()
            last = await self._disconnect_script(
                keys=self._socket_keys(room_id, user_id),
                args=[time.time(), channel, user_id, room_id],
                client=client,
            )
        except redis.RedisError:
            logger.warning("presence: disconnect not recorded (Redis unavailable)", exc_info=True)
            return False
        return bool(last)

    async def users(self, *, room_id: int) -> list[dict]:
        """Everyone with a live socket in the room, ordered by username."""
        client = self._redis()
        try:
            ids = await client.zrangebyscore(self._users_key(room_id), time.time(), "+inf")
            names = await client.hmget(self._names_key(room_id), ids) if ids else []
        except redis.RedisError:
            logger.warning("presence: users unknown (Redis unavailable)", exc_info=True)
            return []
        members = [{"id": int(uid), "username": (name or b"").decode()} for uid, name in zip(ids, names, strict=True)]
        return sorted(members, key=lambda u: u["username"].lower())

    def online_counts(self, room_ids: list[int]) -> dict[int, int]:
        now = time.time()
        try:
            with self._sync.pipeline(transaction=False) as pipe:
                for room_id in room_ids:
                    pipe.zcount(self._users_key(room_id), now, "+inf")
                counts = pipe.execute()
        except redis.RedisError:
            logger.warning("presence: online counts unknown (Redis unavailable)", exc_info=True)
            return {}
        return dict(zip(room_ids, counts, strict=True))

    def clear(self) -> None:
        """Forget everything (tests)."""
        self._local.clear()
        for key in self._sync.scan_iter(match=f"{self.prefix}:*"):
            self._sync.delete(key)

    # --- heartbeat and sweep --------------------------------------------------------------

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                await self.beat()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("presence: heartbeat failed", exc_info=True)

    async def beat(self) -> None:
        """Refresh this node's sockets, then sweep expired users out of every room.

        A user the refresh puts back into a room (this node stalled past the TTL and another node
        announced their leave) is announced as joining again, so every client's list stays right.
        A socket that closes meanwhile is removed once that is done, its leave after that join.
        """
        from chat.events import publish_member

        client = self._redis()
        expires = time.time() + self.ttl
        sockets = list(self._local.items())
        refreshed = asyncio.Event()
        self._refreshing_channels, self._refreshed = frozenset(channel for channel, _ in sockets), refreshed
        try:
            async with client.pipeline(transaction=False) as pipe:
                for channel, (room_id, room_name, user_id, username) in sockets:
                    await self._heartbeat_script(
                        keys=self._socket_keys(room_id, user_id),
                        args=[expires, channel, user_id, self.ttl * 2, username, room_id, room_name],
                        client=pipe,
                    )
                returned = await pipe.execute()
            for (_, (room_id, room_name, user_id, username)), absent in zip(sockets, returned, strict=True):
                if absent:
                    logger.info("presence: user %s back in room %s", user_id, room_name)
                    await publish_member(
                        "join", room_id=room_id, room_name=room_name, user_id=user_id, username=username
                    )
        finally:
            refreshed.set()
            if self._refreshed is refreshed:
                self._refreshing_channels = frozenset()
        await self.sweep()

    async def sweep(self) -> None:
        """Take the users whose sockets have all expired out of every room someone is in, announcing their leave."""
        from chat.events import publish_member

        client = self._redis()
        rooms = [
            (int(room_id), room_name.decode()) for room_id, room_name in (await client.hgetall(self._rooms_key)).items()
        ]
        now = time.time()
        async with client.pipeline(transaction=False) as pipe:
            for room_id, _ in rooms:
                await self._sweep_script(
                    keys=[self._users_key(room_id), self._names_key(room_id), self._rooms_key],
                    args=[now, f"{self.prefix}:{room_id}:u:", room_id],
                    client=pipe,
                )
            swept = await pipe.execute()
        for (room_id, room_name), gone in zip(rooms, swept, strict=True):
            for uid, name in zip(gone[::2], gone[1::2], strict=True):
                logger.info("presence: user %s timed out of room %s", int(uid), room_name)
                await publish_member(
                    "leave", room_id=room_id, room_name=room_name, user_id=int(uid), username=name.decode()
                )
