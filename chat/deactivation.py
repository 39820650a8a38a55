"""Sockets of a banned user close even when the ban's broadcast reached nobody.

A ban closes its user's sockets through the channel layer (events.publish_user_deactivated).
A publish made while Redis is unreachable, or from a command that does not share the server's
layer (the in-process default), is lost. So every CHAT_DEACTIVATION_CHECK_SECONDS each server
process asks the database which users of its open sockets are no longer active and closes their
sockets with 4003, as the broadcast would have; so are the sockets of users deleted meanwhile (a
deletion broadcasts nothing). Meanwhile none of their messages is stored: the writer refuses senders
who are not active or no longer exist (services.PosterDeactivated).
"""

import logging

from channels.db import database_sync_to_async
from django.conf import settings

from chat import periodic, selectors
from chat.events import USER_GROUP_PREFIX, user_group
from chat.hub import hub

logger = logging.getLogger("chat.deactivation")


async def check() -> list[int]:
    """Close the sockets of this process's users who are no longer active; their ids."""
    local = hub().group_ids(USER_GROUP_PREFIX)
    if not local:
        return []
    inactive = await database_sync_to_async(selectors.inactive_user_ids)(user_ids=local)
    for user_id in inactive:
        logger.info("user %s is deactivated: closing their sockets", user_id)
        await hub().dispatch({"type": "user.deactivated", "group": user_group(user_id)})
    return inactive


watch = periodic.every(
    lambda: settings.CHAT_DEACTIVATION_CHECK_SECONDS,
    check,
    name="deactivation-check",
    logger=logger,
    failed="check for deactivated users failed",
)
