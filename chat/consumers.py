"""The room WebSocket: parse a frame, call one service, send events. Protocol in README.md."""

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import deque

from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from chat import deactivation, selectors, services, tails
from chat.events import (
    encode,
    group_send,
    member_event,
    message_event,
    replay_truncated_event,
    room_group,
    user_group,
)
from chat.frames import direct_writer, event_frame, event_frames
from chat.hub import hub
from chat.logs import log_ws
from chat.middleware import AUTH_UNAVAILABLE
from chat.ordering import SeqOrderer
from chat.presence import TooManySockets, presence
from chat.writer import writer
from chatproject.ratelimit import RateLimited

logger = logging.getLogger("chat.ws")

CLOSE_UNAUTHENTICATED = 4001
CLOSE_DEACTIVATED = 4003
CLOSE_UNKNOWN_ROOM = 4004
CLOSE_MESSAGE_TOO_BIG = 1009
CLOSE_FRAME_TOO_LARGE = 4009
CLOSE_TOO_MANY_CONNECTIONS = 4029
CLOSE_TRY_AGAIN = 4500  # the database or channel layer is unavailable: reconnect with since=
GAP_WAIT_SECONDS = 0.5
# A socket's typing frames are relayed at most once a second; the rest are dropped without an answer
# (the web page sends one every 2 s while a key is pressed, and shows it for 4 s).
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


class RoomConsumer(AsyncWebsocketConsumer):
    """One socket in one room. Protocol in README.md.

    The socket has no channel of its own: it follows its room and user groups through the
    process's hub (chat.hub), which calls `deliver` for every event of those groups.
    """

    # No per-socket channel: an alias that names no layer (the hub holds the process's channel).
    channel_layer_alias = "chat.hub"
    room = None
    orderer: SeqOrderer | None = None
    closed = False
    left = False  # disconnect ran: out of the hub's groups and of presence
    write_frame = None  # chat.frames.direct_writer: room events skip the ASGI send path
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
        # What the hub delivered and the socket has not sent yet: (kind, seq or upto, item or found),
        # where an item is (text, its frame or None).
        self.backlog = deque()
        self.emitting = False
        self.user = self.scope.get("user")
        await self.accept()
        self.write_frame = direct_writer(self.asgi_send)
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
        replay = await self._read_replay(since)
        await self.send_event({"type": "presence", "room": room.name, "users": users})
        if since_error:
            await self.send_error("bad_request", since_error)
        await self._replay(*replay)
        if first:
            await self._room_send("chat.member", text=encode(member_event("join", room=room, user=self.user)))
        self.tasks.append(asyncio.create_task(self._close_at_expiry()))

    async def disconnect(self, code):
        if code == CLOSE_MESSAGE_TOO_BIG and not self.closed:
            # uvicorn closed it from the frame's header (ws_max_size): logged as the server's own closes
            # are. (A client closing with 1009 itself is logged the same way; the ASGI event cannot tell.)
            log_ws(self.scope, "ws.close", code=code, reason="frame too large")
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
        except Exception:
            logger.error("message from user %s in room %s not stored", self.user.pk, self.room.name, exc_info=True)
            await self.send_error("unavailable", "The message could not be stored; send it again.", client_id)
            return
        if not result.created:  # a repeated client_id: acknowledge to this socket only
            item = (encode(message_event(result.message)), None)
            if result.message.seq < self.orderer.next_seq:  # delivered before: a second copy, behind the queue
                await self._queue("raw", None, item)
            else:  # not delivered yet: in its place in seq order, never ahead of a lower seq
                await self._queue("message", result.message.seq, item)
        elif not result.published:
            # Stored, but the broadcast did not leave: the sender still gets its acknowledgement
            # (the others fill it from the database at the next message or the next tail check).
            await self._queue("message", result.message.seq, (encode(message_event(result.message)), None))

    # --- events from the hub --------------------------------------------------------------

    def deliver(self, event: dict):
        """An event of the room or user group, from this process's hub.

        Runs without a coroutine while every frame can be written at once (the common case);
        returns a coroutine for the hub to finish when something must be awaited.
        """
        if self.closed:
            return None
        kind = event["type"]
        if kind == "chat.message":  # a committed message: sent in seq order
            self.backlog.append(("message", event["seq"], self._item(event)))
        elif kind == "chat.messages":  # several of one commit, in seq order
            messages = event["messages"]
            frames = event_frames(event) if self.write_frame is not None else [None] * len(messages)
            for (seq, text), frame in zip(messages, frames, strict=True):
                self.backlog.append(("message", seq, (text, frame)))
        elif kind == "chat.typing":  # to everyone but the typist
            if event["user_id"] == self.user.pk:
                return None
            self.backlog.append(("raw", None, self._item(event)))
        elif kind == "user.deactivated":
            return self.close_with(CLOSE_DEACTIVATED, "user deactivated")
        elif kind == "room.tail":  # the room's newest seq (chat.tails): a lost last message is a hole
            # Only for a socket with nothing queued: what waits in its backlog has not reached the
            # orderer yet, and a slow reader's queue would look like a hole to fetch again and again.
            if self.orderer is not None and not self.backlog and not self.emitting:
                self.orderer.expect(event["last_seq"])
                self._watch_holes()
            return None
        elif "text" in event:  # chat.member (join, leave), chat.deleted
            self.backlog.append(("raw", None, self._item(event)))
        else:
            return None
        return self._flush()

    def _item(self, event: dict) -> tuple[str, bytes | None]:
        """The event's text, and its frame (one per process) when this socket can take frames."""
        return event["text"], event_frame(event) if self.write_frame is not None else None

    async def _queue(self, kind: str, seq: int | None, item) -> None:
        self.backlog.append((kind, seq, item))
        pending = self._flush()
        if pending is not None:
            await pending

    def _ordered(self, kind: str, seq: int | None, item) -> list | tuple:
        """What a backlog entry releases, in order: a message may wait for (or fill) a hole in seq."""
        if kind == "message":
            return self.orderer.offer(seq, item)
        if kind == "fill":
            return self.orderer.fill(seq, item)
        return (item,)

    def _flush(self):
        """Write what the backlog holds as direct frames; a coroutine for the rest, or None.

        Everything the backlog releases goes out in one write (the frames of a commit's messages
        together), as far as it has frames and the socket takes them; the rest goes through `_emit`.
        The writer checks that the transport is not paused before the write, so a slow reader's
        buffer can pass its high-water mark by one write: at most one commit's messages to the room.
        None also while the socket is still joining (no orderer yet: events wait in the backlog)
        and while a send is under way (`emitting`: new events join the backlog, never overtake it).
        """
        if self.orderer is None or self.emitting:
            return None
        released = []
        try:
            while self.backlog and not self.closed:
                released.extend(self._ordered(*self.backlog.popleft()))
            written = self._write_frames(released)
        except Exception:
            self._gone()
            return None
        if written < len(released):
            # Released by the orderer already: what is left goes on unordered ("raw").
            self.backlog.extendleft(("raw", None, rest) for rest in reversed(released[written:]))
            return self._emit()
        self._watch_holes()
        return None

    def _write_frames(self, items: list) -> int:
        """Write the leading items that have frames in one direct write; how many were written."""
        count = 0
        while count < len(items) and items[count][1] is not None:
            count += 1
        if count == 0:
            return 0
        data = items[0][1] if count == 1 else b"".join(frame for _text, frame in items[:count])
        return count if self.write_frame(data) else 0

    async def _emit(self) -> None:
        """The backlog through the ASGI send, in order; the one way room events leave that can wait."""
        if self.orderer is None or self.emitting:
            return
        self.emitting = True
        try:
            while self.backlog and not self.closed:
                for text, frame in self._ordered(*self.backlog.popleft()):
                    if frame is None or not self.write_frame(frame):
                        await self.send(text_data=text)
        except Exception:
            self._gone()
        finally:
            self.emitting = False
        self._watch_holes()

    def _gone(self) -> None:
        """A write or send failed: the client is gone (uvicorn: ClientDisconnected, daphne: Disconnected)."""
        logger.debug("write to a closed socket dropped", exc_info=True)
        self.closed = True
        self.backlog.clear()

    def _watch_holes(self) -> None:
        """A message waiting behind a hole in seq: fetch the hole from the database after a while."""
        if self.closed or self.orderer.hole() is None:
            return
        if not any(t.get_name() == "gap" for t in self._live_tasks()):
            self.tasks.append(asyncio.create_task(self._fill_holes(), name="gap"))

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

        values = parse_qs(self.scope.get("query_string", b"").decode("latin1")).get(name)
        return values[0] if values else None

    async def _room_send(self, handler: str, **fields) -> None:
        await group_send(room_group(self.room.pk), {"type": handler, **fields})

    async def _read_replay(self, since: int | None) -> tuple[list, int]:
        """The messages after `since` to replay, and the room's last seq at the same moment."""
        if since is None:
            return [], await database_sync_to_async(selectors.room_last_seq)(room_id=self.room.pk)
        # One more than is replayed: whether anything is left out (the newest seqs may be deleted ones).
        return await database_sync_to_async(selectors.message_replay)(
            room_id=self.room.pk, after=since, limit=settings.CHAT_REPLAY_LIMIT + 1
        )

    async def _replay(self, messages: list, last_seq: int) -> None:
        # Live delivery resumes after the room's newest message; a client more than
        # CHAT_REPLAY_LIMIT behind is told so (replay_truncated, after the replay) and pages the
        # rest with GET /messages?after=. A since beyond the newest message (a client of a reset
        # database) still gets every new message. What the hub delivered meanwhile waits in the
        # backlog, behind the replay; the orderer drops what the replay already holds.
        left_out = len(messages) > settings.CHAT_REPLAY_LIMIT
        messages = messages[: settings.CHAT_REPLAY_LIMIT]
        replay = [encode(message_event(m)) for m in messages]
        if left_out:
            cut = replay_truncated_event(room_name=self.room.name, replayed_to=messages[-1].seq, last_seq=last_seq)
            replay.append(encode(cut))
        self.backlog.extendleft(("raw", None, (text, None)) for text in reversed(replay))
        self.orderer = SeqOrderer(next_seq=last_seq + 1)
        await self._emit()

    async def _fill_holes(self) -> None:
        while True:
            await asyncio.sleep(GAP_WAIT_SECONDS)
            hole = self.orderer.hole()
            if hole is None:
                return
            after, upto = hole
            messages = await database_sync_to_async(selectors.message_range)(
                room_id=self.room.pk, after=after, upto=upto
            )
            await self._queue("fill", upto, {m.seq: (encode(message_event(m)), None) for m in messages})

    async def _close_at_expiry(self) -> None:
        expires_at = self.scope.get("token_expires_at") or time.time()
        await asyncio.sleep(max(0.0, expires_at - time.time()))
        await self.close_with(CLOSE_UNAUTHENTICATED, "token expired")

    def _live_tasks(self):
        self.tasks = [t for t in self.tasks if not t.done()]
        return self.tasks
