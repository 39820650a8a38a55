"""A room's last message reaches its sockets even when its broadcast was lost.

A socket fills a hole in seq from the database when a later message arrives behind it
(chat.ordering). A broadcast lost while the channel layer was unreachable (a Redis restart) with
no message after it leaves no such hole: the room's last message would stay missing until someone
posted again. So every TAIL_CHECK_SECONDS each server process reads the newest seq of the rooms its
sockets are in, and tells those sockets; one that has not had it fetches what it lacks from the
database, after the short wait it gives any hole (a broadcast may still be on its way).
"""

import asyncio
import logging
import weakref

from channels.db import database_sync_to_async

from chat import selectors
from chat.events import ROOM_GROUP_PREFIX, room_group
from chat.hub import hub
from chatproject.logs import no_log_context

logger = logging.getLogger("chat.tails")

TAIL_CHECK_SECONDS = 5.0

_checks: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task]" = weakref.WeakKeyDictionary()


def watch() -> None:
    """Start the running event loop's periodic check, once."""
    loop = asyncio.get_running_loop()
    task = _checks.get(loop)
    if task is None or task.done():
        with no_log_context():
            _checks[loop] = loop.create_task(_check_forever(), name="tail-check")


async def _check_forever() -> None:
    while True:
        await asyncio.sleep(TAIL_CHECK_SECONDS)
        try:
            await check()
        except asyncio.CancelledError:
            raise
        except Exception:  # the database is down: the next check tries again
            logger.warning("check of the rooms' last messages failed", exc_info=True)


async def check() -> dict[int, int]:
    """Tell this process's sockets their rooms' newest seqs; {room id: last seq}."""
    rooms = [int(group.removeprefix(ROOM_GROUP_PREFIX)) for group in hub().groups(ROOM_GROUP_PREFIX)]
    if not rooms:
        return {}
    last_seqs = await database_sync_to_async(selectors.room_last_seqs)(room_ids=rooms)
    for room_id, last_seq in last_seqs.items():
        await hub().dispatch({"type": "room.tail", "group": room_group(room_id), "last_seq": last_seq})
    return last_seqs
