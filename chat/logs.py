"""Log lines about one WebSocket connection, carrying its connection_id, user_id and room."""

import logging
from typing import Any

logger = logging.getLogger("chat.ws")


def ws_fields(scope) -> dict[str, Any]:
    """The connection_id, user_id and room a socket's scope knows of (None when not yet known)."""
    user = scope.get("user")
    route = scope.get("url_route") or {}
    return {
        "connection_id": scope.get("connection_id"),
        "user_id": getattr(user, "pk", None),
        "room": (route.get("kwargs") or {}).get("room"),
    }


def log_ws(scope, event: str, level: int = logging.INFO, *, exc_info=None, **fields: Any) -> None:
    """Log `event` for the socket of `scope` with its ids and `fields` (code, reason, ...); None values are left out.

    A field overrides what the scope says (pass room=self.room.name once the room is resolved).
    Field names must not be LogRecord attributes (name, msg, args, module, ...).
    """
    extra = {key: value for key, value in {**ws_fields(scope), **fields}.items() if value is not None}
    logger.log(level, event, exc_info=exc_info, extra=extra)
