"""The one place that shapes what leaves the server about a message, and sends it to groups.

Group names come from ids, never from user text: `room.<id>` and `user.<id>`.
"""

import asyncio
import json
import logging
import time
import weakref

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.utils import timezone
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from chat.models import Message, Room

logger = logging.getLogger("chat.events")


ROOM_GROUP_PREFIX = "room."


def room_group(room_id: int) -> str:
    return f"{ROOM_GROUP_PREFIX}{room_id}"


USER_GROUP_PREFIX = "user."


def user_group(user_id: int) -> str:
    return f"{USER_GROUP_PREFIX}{user_id}"


def user_payload(user) -> dict:
    return {"id": user.pk, "username": user.username}


def _message_object(*, id, seq, room_name, user_id, username, content, created, client_id) -> dict:
    return {
        "id": id,
        "seq": seq,
        "room": room_name,
        "user": {"id": user_id, "username": username},
        "content": content,
        "timestamp": created.isoformat(),
        "client_id": client_id,
    }


def message_payload(message: Message) -> dict:
    """Return the message object, identical over REST and WebSocket."""
    return _message_object(
        id=message.pk,
        seq=message.seq,
        room_name=message.room.name,
        user_id=message.user.pk,
        username=message.user.username,
        content=message.content,
        created=message.created,
        client_id=message.client_id,
    )


def message_payload_from_row(row: dict, room_name: str) -> dict:
    """message_payload of a row of selectors.MESSAGE_ROW_FIELDS in the room named `room_name`."""
    return _message_object(
        id=row["id"],
        seq=row["seq"],
        room_name=room_name,
        user_id=row["user_id"],
        username=row["user__username"],
        content=row["content"],
        created=row["created"],
        client_id=row["client_id"],
    )


def message_event(message: Message) -> dict:
    return {"type": "message", **message_payload(message)}


def member_event(kind: str, *, room: Room | str, user) -> dict:
    """A `join` or `leave` event; `user` is a User or an {"id", "username"} dict."""
    name = room if isinstance(room, str) else room.name
    member = user if isinstance(user, dict) else user_payload(user)
    return {"type": kind, "room": name, "user": member, "timestamp": timezone.now().isoformat()}


# One encoder for every event: json.dumps with options other than the defaults builds a new one per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def encode(event: dict) -> str:
    """Serialise an event once; every socket then sends the same text."""
    return _ENCODER.encode(event)


# After the channel layer failed to take a send for want of its Redis (refused, reset, or no answer
# within REDIS_TIMEOUT_SECONDS), sends skip it this long: a Redis that hangs costs one broadcast its
# timeout, not every sender's answer while it is down (broadcasts go out in commit order, each after
# the one before). Sockets catch up from the database meanwhile (chat.tails, every 5 s).
LAYER_PAUSE_SECONDS = 5.0
LAYER_OUTAGES = (RedisError, OSError)  # OSError covers TimeoutError


class _LayerOutage:
    """One incident is logged once when it begins (with its traceback) and once when it ends."""

    paused_until = 0.0
    failing = False
    skipped = 0


# Sends of one event loop take the layer one at a time (channels_redis publishes one at a time
# anyway), so that those waiting behind a send that fails see the pause instead of each waiting out
# its own timeout.
_send_locks: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock]" = weakref.WeakKeyDictionary()


def _send_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _send_locks.get(loop)
    if lock is None:
        lock = _send_locks[loop] = asyncio.Lock()
    return lock


async def _layer_send(group: str, message: dict) -> None:
    layer = get_channel_layer()
    try:
        await layer.group_send(group, message)
    except RedisConnectionError:
        # A connection Redis closed (a restart that is over, an idle timeout) fails once; the second
        # try opens a new one. A Redis that does not answer is not asked twice.
        await layer.group_send(group, message)


async def group_send(group: str, message: dict) -> bool:
    """Send to a group; the database stays the record, so a failed send is logged, not raised.

    The message names its group: each process's hub (chat.hub) receives it once and hands it
    to that process's sockets in the group.
    """
    outage = _LayerOutage
    async with _send_lock():
        if time.monotonic() < outage.paused_until:
            outage.skipped += 1
            return False
        try:
            await _layer_send(group, {**message, "group": group})
        except LAYER_OUTAGES as exc:
            outage.paused_until = time.monotonic() + LAYER_PAUSE_SECONDS
            outage.skipped += 1
            if not outage.failing:
                outage.failing = True
                logger.error(
                    "channel layer send to %s failed; sends skip the layer for %g s at a time until it answers "
                    "(sockets catch up from the database)",
                    group,
                    LAYER_PAUSE_SECONDS,
                    exc_info=True,
                )
            else:
                logger.warning("channel layer still unreachable (%s: %s)", type(exc).__name__, exc)
            return False
        except Exception:
            logger.exception("channel layer send to %s failed", group)
            return False
        if outage.failing:
            logger.warning("channel layer reachable again; %d sends skipped or failed meanwhile", outage.skipped)
        outage.paused_until, outage.failing, outage.skipped = 0.0, False, 0
        return True


def _group_send(group: str, message: dict) -> bool:
    return async_to_sync(group_send)(group, message)


async def apublish_messages(messages: list[Message]) -> list[bool]:
    """Broadcast committed messages, one layer message per room (sockets: chat.message for one,
    chat.messages for several, in seq order); one flag per message: did it reach the layer."""
    by_room: dict[int, list[Message]] = {}
    for m in messages:
        by_room.setdefault(m.room_id, []).append(m)
    reached = {}
    for room_id, batch in by_room.items():
        batch.sort(key=lambda m: m.seq)
        if len(batch) == 1:
            event = {"type": "chat.message", "seq": batch[0].seq, "text": encode(message_event(batch[0]))}
        else:
            event = {"type": "chat.messages", "messages": [[m.seq, encode(message_event(m))] for m in batch]}
        reached[room_id] = await group_send(room_group(room_id), event)
    return [reached[m.room_id] for m in messages]


def publish_messages(messages: list[Message]) -> list[bool]:
    """Broadcast committed messages from synchronous code: one hop to the event loop for all."""
    return async_to_sync(apublish_messages)(messages)


def replay_truncated_event(*, room_name: str, replayed_to: int, last_seq: int) -> dict:
    """After a replay cut at CHAT_REPLAY_LIMIT: the client pages after `replayed_to` up to `last_seq`."""
    return {"type": "replay_truncated", "room": room_name, "replayed_to": replayed_to, "last_seq": last_seq}


def message_deleted_event(*, room_name: str, message_id: int, seq: int) -> dict:
    return {"type": "message_deleted", "room": room_name, "id": message_id, "seq": seq}


async def apublish_messages_deleted(messages: list[Message]) -> None:
    """Tell each room its deleted messages are gone, in one layer message per room (chat.deletions:
    a message_deleted event each, in seq order); their seqs are never reused."""
    by_room: dict[int, list[Message]] = {}
    for m in messages:
        by_room.setdefault(m.room_id, []).append(m)
    for room_id, gone in by_room.items():
        gone.sort(key=lambda m: m.seq)
        texts = [encode(message_deleted_event(room_name=m.room.name, message_id=m.pk, seq=m.seq)) for m in gone]
        await group_send(room_group(room_id), {"type": "chat.deletions", "texts": texts})


def publish_messages_deleted(messages: list[Message]) -> None:
    """apublish_messages_deleted from synchronous code: one hop to the event loop for all."""
    async_to_sync(apublish_messages_deleted)(messages)


def publish_user_deactivated(*, user_id: int) -> bool:
    """Tell every socket of the user to close with 4003 (consumer handler: user_deactivated)."""
    return _group_send(user_group(user_id), {"type": "user.deactivated"})


async def publish_member(kind: str, *, room_id: int, room_name: str, user_id: int, username: str) -> None:
    """Announce a `leave` noticed by presence expiry (the user's node died), or the `join` of a user
    whose node refreshed them back after such a leave (it had stalled)."""
    event = member_event(kind, room=room_name, user={"id": user_id, "username": username})
    await group_send(room_group(room_id), {"type": "chat.member", "text": encode(event)})
