"""The room WebSocket: parse a frame, call one service, send events. Protocol in README.md."""

import asyncio
import contextlib
import json
import logging
import time
import uuid

from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from chat import deactivation, selectors, services, tails
from chat.delivery import RoomDelivery
from chat.events import (
    encode,
    group_send,
    member_event,
    room_group,
    user_group,
)
from chat.frames import direct_writer
from chat.hub import hub
from chat.logs import log_ws
from chat.middleware import AUTH_UNAVAILABLE
from chat.presence import TooManySockets, presence
from chat.writer import DatabaseUnavailable, writer
from chatproject.ratelimit import RateLimited

logger = logging.getLogger("chat.ws")

CLOSE_UNAUTHENTICATED = 4001
CLOSE_DEACTIVATED = 4003
CLOSE_UNKNOWN_ROOM = 4004
CLOSE_MESSAGE_TOO_BIG = 1009
CLOSE_SERVER_RESTARTING = 1012
CLOSE_FRAME_TOO_LARGE = 4009
CLOSE_TOO_MANY_CONNECTIONS = 4029
CLOSE_TRY_AGAIN = 4500  # the database or channel layer is unavailable: reconnect with since=
# A socket's typing frames are relayed at most once a second, counted afresh after each of its messages;
# the rest are dropped without an answer (the web page sends one every 2 s while a key is pressed, and
# again at the first keystroke after a send; it shows one for 4 s).
TYPING_EVERY_SECONDS = 1.0


def parse_since(raw: str | None) -> tuple[int | None, str | None]:
    """Return (since, error)."""
    if raw is None or raw == "":
        return None, None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        return None, "since must be a non-negative integer of at most 18 digits."
    return int(raw), None


def parse_frame(text: str) -> dict | None:
    """A JSON object is a command; any other text is the content of a message. None: a JSON object
    the decoder cannot take (nested too deeply, or an integer over Python's 4,300 digits), which is
    neither a command nor meant as a message."""
    try:
        frame = json.loads(text)
    except json.JSONDecodeError:  # not JSON
        frame = None
    except (ValueError, RecursionError):  # JSON, but too deep or with too long a number
        if text.lstrip(" \t\r\n").startswith("{"):
            return None
        frame = None
    return frame if isinstance(frame, dict) else {"type": "message", "content": text}


class ClientGone(Exception):
    """A send found the connection already closed by the client: the socket ends, nothing failed."""


def raising_client_gone(send):
    """The ASGI `send`, raising ClientGone where the server raises an OSError (ASGI: a send on a
    connection the client closed; uvicorn's ClientDisconnected)."""

    async def checked(message):
        try:
            await send(message)
        except OSError as exc:
            raise ClientGone from exc

    return checked


class UnknownPathConsumer(AsyncWebsocketConsumer):
    """Any other WebSocket path: accepted, then closed like an unknown room."""

    channel_layer_alias = "chat.hub"  # no channel needed (see RoomConsumer)

    async def connect(self):
        await self.accept()
        log_ws(self.scope, "ws.close", code=CLOSE_UNKNOWN_ROOM, reason="unknown path")
        await self.close(code=CLOSE_UNKNOWN_ROOM)


class RoomConsumer(RoomDelivery, AsyncWebsocketConsumer):
    """One socket in one room: joining, the client's frames, leaving. Protocol in README.md.

    The socket has no channel of its own: it follows its room and user groups through the
    process's hub (chat.hub), which calls `deliver` for every event of those groups; what the
    socket is sent, and in which order, is chat.delivery's.
    """

    # No per-socket channel: an alias that names no layer (the hub holds the process's channel).
    channel_layer_alias = "chat.hub"
    room = None
    closed = False
    left = False  # disconnect ran: out of the hub's groups and of presence
    typing_at = float("-inf")  # when this socket's last typing frame was relayed (time.monotonic)
    tasks: list

    async def __call__(self, scope, receive, send):
        # Channels waits for each frame with a new task and asyncio.wait, to listen to the socket's
        # channel-layer channel at the same time; these sockets have none (the alias names no
        # layer), so frames are read in a plain loop.
        self.scope = scope
        self.channel_layer = None
        self.asgi_send = send
        self.base_send = raising_client_gone(send)
        try:
            with contextlib.suppress(StopConsumer):
                while True:
                    await self.dispatch(await receive())
        except ClientGone:  # e.g. closed while joining: an ordinary end, not an error
            log_ws(self.scope, "ws.client_gone", reason="closed by the client while the server was sending")
        finally:
            if not self.left:  # an error ended the socket: it leaves its room all the same, no ghost
                try:
                    await self.disconnect(None)
                except Exception:
                    logger.warning("socket ended by an error could not leave its room", exc_info=True)

    async def dispatch(self, message):
        # Channels closes stale database connections before every frame (a thread hop each); the
        # database calls here look after their connections themselves (database_sync_to_async,
        # and the writer's own thread).
        handler = getattr(self, message["type"].replace(".", "_"), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self):
        self.tasks = []
        self.groups_followed = []
        self.socket_id = f"ws.{uuid.uuid4().hex}"
        self.user = self.scope.get("user")
        await self.accept()
        self.start_delivery(direct_writer(self.asgi_send))
        if self.user is None:
            if self.scope.get("auth_refusal") == AUTH_UNAVAILABLE:
                await self.close_with(CLOSE_TRY_AGAIN, "authentication unavailable")
            else:
                await self.close_with(CLOSE_UNAUTHENTICATED, "token not accepted")
            return
        try:
            await self._join()
        except ClientGone:
            raise
        except Exception:
            # A server-side outage, not the client's fault: say "try again", never 1011.
            await self.close_with(CLOSE_TRY_AGAIN, "could not join room", logging.ERROR, exc_info=True)

    async def _join(self) -> None:
        room_name = self.scope["url_route"]["kwargs"]["room"]
        room = await database_sync_to_async(selectors.room_get)(name=room_name)
        if room is None:
            await self.close_with(CLOSE_UNKNOWN_ROOM, "unknown room")
            return
        since, since_error = parse_since(self._query_param("since"))
        me = {"id": self.user.pk, "username": self.user.username}
        limit = settings.CHAT_MAX_CONNECTIONS_PER_USER
        try:  # counted and recorded at once: sockets of one user connecting together cannot all pass
            first = await presence.connect(
                room_id=room.pk,
                room_name=room.name,
                user_id=me["id"],
                username=me["username"],
                channel=self.socket_id,
                limit=limit,
            )
        except TooManySockets:
            await self.close_with(CLOSE_TOO_MANY_CONNECTIONS, "too many connections", limit=limit)
            return
        self.room = room  # from here on, disconnect() takes the socket out of presence again

        # Follow the room before reading history, so nothing committed from here on can be missed.
        for group in (room_group(room.pk), user_group(self.user.pk)):
            self.groups_followed.append(group)
            await hub().subscribe(group, self)
        deactivation.watch()
        tails.watch()
        users = await presence.users(room_id=room.pk)
        if me not in users:  # presence store unavailable: at least you are here
            users = sorted([*users, me], key=lambda u: u["username"].lower())
        # Where live delivery starts is read before presence is sent: a message committed once the
        # client holds its presence event (its own first send, a peer's answer) is past that point.
        replay = await self.read_replay(since)
        await self.send_event({"type": "presence", "room": room.name, "users": users})
        if since_error:
            await self.send_error("bad_request", since_error)
        await self.start_live(*replay)
        if first:
            await self._room_send("chat.member", text=encode(member_event("join", room=room, user=self.user)))
        self.tasks.append(asyncio.create_task(self._close_at_expiry()))

    async def disconnect(self, code):
        if code == CLOSE_MESSAGE_TOO_BIG and not self.closed:
            # uvicorn closed it from the frame's header (ws_max_size): logged as the server's own closes
            # are. (A client closing with 1009 itself is logged the same way; the ASGI event cannot tell.)
            log_ws(self.scope, "ws.close", code=code, reason="frame too large")
        elif code == CLOSE_SERVER_RESTARTING and not self.closed:
            # uvicorn, shutting down (SIGTERM), told the client to come back: so many were told.
            log_ws(self.scope, "ws.close", code=code, reason="server restarting")
        self.closed = self.left = True
        for task in self.tasks:
            task.cancel()
        # A cancelled task keeps its CancelledError, whose traceback holds the task's frame and so
        # this consumer: without the list, nothing leads back from the consumer to the task, and
        # the closed socket's objects are freed at once instead of at the next full collection.
        self.tasks.clear()
        for group in getattr(self, "groups_followed", ()):
            await hub().unsubscribe(group, self)
        if self.room is None:
            return
        last = await presence.disconnect(room_id=self.room.pk, user_id=self.user.pk, channel=self.socket_id)
        if last:
            await self._room_send("chat.member", text=encode(member_event("leave", room=self.room, user=self.user)))

    async def receive(self, text_data=None, bytes_data=None):
        """Handle one client frame."""
        if self.orderer is None or self.closed:  # not joined (refused, or failed to join) and closing:
            return  # frames that raced the close are dropped
        payload = text_data if text_data is not None else bytes_data or b""
        size = len(payload.encode("utf-8", "surrogatepass")) if isinstance(payload, str) else len(payload)
        if size > settings.CHAT_MAX_FRAME_BYTES:
            # 1009 (message too big) where the server can send it: uvicorn's protocol can, daphne's
            # (autobahn) lets an application close only with 1000 or 3000-4999.
            code = CLOSE_MESSAGE_TOO_BIG if self.write_frame is not None else CLOSE_FRAME_TOO_LARGE
            await self.close_with(code, "frame too large", size=size)
            return
        if text_data is None:
            await self.send_error("bad_request", "Binary frames are not supported; send JSON text.")
            return
        frame = parse_frame(text_data)
        if frame is None:
            await self.send_error("bad_request", "This JSON object is nested too deeply or holds too long a number.")
            return
        kind = frame.get("type")
        if kind == "message":
            # The others clear a typing notice when the typist's message arrives: the next typing
            # frame is news again, however soon it comes.
            self.typing_at = float("-inf")
            await self._message(frame)
        elif kind == "typing":
            await self._typing()
        else:
            await self.send_error("bad_request", 'type must be "message" or "typing".', frame.get("client_id"))

    async def _typing(self) -> None:
        now = time.monotonic()
        if now - self.typing_at < TYPING_EVERY_SECONDS:
            return  # the others were told a moment ago
        self.typing_at = now
        await self._room_send(
            "chat.typing",
            user_id=self.user.pk,
            text=encode(
                {
                    "type": "typing",
                    "room": self.room.name,
                    "user": {"id": self.user.pk, "username": self.user.username},
                }
            ),
        )

    async def _message(self, frame: dict) -> None:
        client_id = frame.get("client_id")
        if "content" not in frame:
            await self.send_error("bad_request", "content is required.", client_id)
            return
        try:
            result = await writer().create(
                room=self.room, user=self.user, content=frame["content"], client_id=client_id
            )
        except services.MessageRejected as exc:
            await self.send_error(exc.code, exc.detail, client_id, **exc.extra)
            return
        except services.PosterDeactivated:  # banned, and the ban's close did not reach this socket
            await self.close_with(CLOSE_DEACTIVATED, "user deactivated")
            return
        except RateLimited as exc:
            await self.send_error(
                "rate_limited", "Too many messages; wait before sending again.", client_id, retry_after=exc.seconds
            )
            return
        except Exception as exc:
            if not isinstance(exc, DatabaseUnavailable):  # that one is logged by the writer, once per outage
                logger.error("message from user %s in room %s not stored", self.user.pk, self.room.name, exc_info=True)
            await self.send_error("unavailable", "The message could not be stored; send it again.", client_id)
            return
        await self.acknowledge(result)

    def deactivated(self):
        """The hub's word that this socket's user was banned or deleted."""
        return self.close_with(CLOSE_DEACTIVATED, "user deactivated")

    # --- helpers --------------------------------------------------------------------------

    async def close_with(self, code: int, reason: str, level: int = logging.INFO, **fields) -> None:
        """Log the close with its code, then close."""
        log_ws(self.scope, "ws.close", level, code=code, reason=reason, **fields)
        self.closed = True
        await self.close(code=code)

    async def send_event(self, event: dict) -> None:
        await self.send(text_data=encode(event))

    async def send_error(self, code: str, detail: str, client_id=None, **extra) -> None:
        event = {"type": "error", "code": code, "detail": detail, **extra}
        # Echoed only as text the socket can carry: a lone surrogate (a JSON escape such as "\ud800")
        # cannot be encoded as UTF-8, and the frame would fail to send.
        if (
            isinstance(client_id, str)
            and len(client_id) <= services.CLIENT_ID_MAX_LENGTH
            and services.is_storable_text(client_id)
        ):
            event["client_id"] = client_id
        await self.send_event(event)

    def _query_param(self, name: str) -> str | None:
        from urllib.parse import parse_qs

        values = parse_qs(self.scope.get("query_string", b"").decode("latin1"), keep_blank_values=True).get(name)
        return values[-1] if values else None  # given twice: the last, as the HTTP API reads it

    async def _room_send(self, handler: str, **fields) -> None:
        await group_send(room_group(self.room.pk), {"type": handler, **fields})

    async def _close_at_expiry(self) -> None:
        expires_at = self.scope.get("token_expires_at") or time.time()
        await asyncio.sleep(max(0.0, expires_at - time.time()))
        await self.close_with(CLOSE_UNAUTHENTICATED, "token expired")

    def _live_tasks(self):
        self.tasks = [t for t in self.tasks if not t.done()]
        return self.tasks
