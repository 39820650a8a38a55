"""A room's last message reaches its sockets even when its broadcast was lost.

A socket fills a hole in seq from the database when a later message arrives behind it
(chat.ordering). A broadcast lost while the channel layer was unreachable (a Redis restart) with
no message after it leaves no such hole: the room's last message would stay missing until someone
posted again. So every TAIL_CHECK_SECONDS each server process reads the newest seq of the rooms its
sockets are in, and tells those sockets; one that has not had it fetches what it lacks from the
database, after the short wait it gives any hole (a broadcast may still be on its way).
"""

import logging

from channels.db import database_sync_to_async

from chat import periodic, selectors
from chat.events import ROOM_GROUP_PREFIX, room_group
from chat.hub import hub

logger = logging.getLogger("chat.tails")

TAIL_CHECK_SECONDS = 5.0


async def check() -> dict[int, int]:
    """Tell this process's sockets their rooms' newest seqs; {room id: last seq}."""
    rooms = hub().group_ids(ROOM_GROUP_PREFIX)
    if not rooms:
        return {}
    last_seqs = await database_sync_to_async(selectors.room_last_seqs)(room_ids=rooms)
    for room_id, last_seq in last_seqs.items():
        await hub().dispatch({"type": "room.tail", "group": room_group(room_id), "last_seq": last_seq})
    return last_seqs


watch = periodic.every(
    lambda: TAIL_CHECK_SECONDS,
    check,
    name="tail-check",
    logger=logger,
    failed="check of the rooms' last messages failed",
)
