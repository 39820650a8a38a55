"""Who is online where: one small interface, an in-process store for one node, Redis for several.

A user is online in a room while at least one of their sockets is connected to it, so
`connect` reports the first socket (time to announce a join) and `disconnect` the last
(time to announce a leave).
"""

import threading


class TooManySockets(Exception):
    """The user already has `limit` live sockets: this one is not recorded."""


class InProcessPresence:
    """Presence for a single server process. Thread-safe: REST views read it from worker threads."""

    shared = False  # another process (a manage.py command) sees nothing of it

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Only what is connected is kept: a room, a user, a username goes with its last socket, so
        # churn leaves nothing behind. A channel is in _user_sockets exactly while it is in _sockets.
        # room id -> user id -> set of channel names
        self._sockets: dict[int, dict[int, set[str]]] = {}
        self._usernames: dict[int, str] = {}
        # user id -> channel names in every room
        self._user_sockets: dict[int, set[str]] = {}

    async def connect(
        self, *, room_id: int, room_name: str, user_id: int, username: str, channel: str, limit: int = 0
    ) -> bool:
        """Record a socket; True when it is the user's first in the room. TooManySockets when the user
        already has `limit` sockets (0: no limit), counted and recorded in one step."""
        with self._lock:
            if limit and len(self._user_sockets.get(user_id, ())) >= limit:
                raise TooManySockets
            channels = self._sockets.setdefault(room_id, {}).setdefault(user_id, set())
            first = not channels
            channels.add(channel)
            self._usernames[user_id] = username
            self._user_sockets.setdefault(user_id, set()).add(channel)
            return first

    async def disconnect(self, *, room_id: int, user_id: int, channel: str) -> bool:
        """Forget a socket; True when it was the user's last in the room."""
        with self._lock:
            users = self._sockets.get(room_id, {})
            channels = users.get(user_id)
            if channels is None or channel not in channels:
                return False
            channels.discard(channel)
            everywhere = self._user_sockets[user_id]
            everywhere.discard(channel)
            if not everywhere:
                del self._user_sockets[user_id]
                del self._usernames[user_id]
            if channels:
                return False
            del users[user_id]
            if not users:
                del self._sockets[room_id]
            return True

    async def users(self, *, room_id: int) -> list[dict]:
        """Everyone online in the room, ordered by username."""
        with self._lock:
            ids = list(self._sockets.get(room_id, {}))
            members = [{"id": uid, "username": self._usernames[uid]} for uid in ids]
        return sorted(members, key=lambda u: u["username"].lower())

    def online_counts(self, room_ids: list[int]) -> dict[int, int]:
        with self._lock:
            return {rid: len(self._sockets.get(rid, {})) for rid in room_ids}

    def clear(self) -> None:
        with self._lock:
            self._sockets.clear()
            self._usernames.clear()
            self._user_sockets.clear()


def _configured():
    from django.conf import settings

    if settings.REDIS_URL:
        from chat.presence_redis import RedisPresence

        return RedisPresence(
            url=settings.REDIS_URL,
            prefix=settings.CHAT_REDIS_PREFIX,
            ttl=settings.CHAT_PRESENCE_TTL_SECONDS,
            timeout=settings.REDIS_TIMEOUT_SECONDS,
        )
    return InProcessPresence()


presence = _configured()
