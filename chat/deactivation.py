"""Sockets of a banned user close even when the ban's broadcast reached nobody.

A ban closes its user's sockets through the channel layer (events.publish_user_deactivated).
A publish made while Redis is unreachable, or from a command that does not share the server's
layer (the in-process default), is lost. So every CHAT_DEACTIVATION_CHECK_SECONDS each server
process asks the database which users of its open sockets are no longer active and closes their
sockets with 4003, as the broadcast would have; so are the sockets of users deleted meanwhile (a
deletion broadcasts nothing). Meanwhile none of their messages is stored: the writer refuses senders
who are not active or no longer exist (services.PosterDeactivated).
"""

import asyncio
import logging
import weakref

from channels.db import database_sync_to_async
from django.conf import settings

from chat import selectors
from chat.events import USER_GROUP_PREFIX, user_group
from chat.hub import hub
from chatproject.logs import no_log_context

logger = logging.getLogger("chat.deactivation")

_checks: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task]" = weakref.WeakKeyDictionary()


def watch() -> None:
    """Start the running event loop's periodic check, once."""
    loop = asyncio.get_running_loop()
    task = _checks.get(loop)
    if task is None or task.done():
        with no_log_context():
            _checks[loop] = loop.create_task(_check_forever(), name="deactivation-check")


async def _check_forever() -> None:
    while True:
        await asyncio.sleep(settings.CHAT_DEACTIVATION_CHECK_SECONDS)
        try:
            await check()
        except asyncio.CancelledError:
            raise
        except Exception:  # the database is down: the next check tries again
            logger.warning("check for deactivated users failed", exc_info=True)


async def check() -> list[int]:
    """Close the sockets of this process's users who are no longer active; their ids."""
    local = [int(group.removeprefix(USER_GROUP_PREFIX)) for group in hub().groups(USER_GROUP_PREFIX)]
    if not local:
        return []
    inactive = await database_sync_to_async(selectors.inactive_user_ids)(user_ids=local)
    for user_id in inactive:
        logger.info("user %s is deactivated: closing their sockets", user_id)
        await hub().dispatch({"type": "user.deactivated", "group": user_group(user_id)})
    return inactive
