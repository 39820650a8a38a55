"""Writes on rooms and messages. Every transport (REST, WebSocket, admin, commands) calls these."""

import re
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction

from accounts.models import User
from chat.events import publish_message
from chat.models import Message, Room
from chatproject.ratelimit import hit, parse_rate

CLIENT_ID_MAX_LENGTH = 64
ROOM_TITLE_MAX_LENGTH = 200
SLUG = re.compile(r"[-a-zA-Z0-9_]{1,50}")


class MessageRejected(Exception):
    """A message that will not be stored. `code` is the WebSocket error code, `field` the REST field."""

    def __init__(self, code: str, detail: str, field: str = "content"):
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.field = field


def _is_storable_text(text: str) -> bool:
    # NUL and lone surrogates (from JSON escapes such as "\ud800") cannot be stored as text.
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def message_validate(*, content, client_id=None) -> None:
    """Raise MessageRejected unless content and client_id are acceptable."""
    if not isinstance(content, str):
        raise MessageRejected("bad_request", "content must be a string.")
    if not content.strip():
        raise MessageRejected("empty", "Message is empty.")
    limit = settings.CHAT_MAX_MESSAGE_LENGTH
    if len(content) > limit:
        raise MessageRejected("too_long", f"Message is longer than {limit} characters.")
    if not _is_storable_text(content):
        raise MessageRejected("bad_request", "content contains characters that cannot be stored.")
    if client_id is not None and not (
        isinstance(client_id, str) and 1 <= len(client_id) <= CLIENT_ID_MAX_LENGTH and _is_storable_text(client_id)
    ):
        raise MessageRejected(
            "bad_request", f"client_id must be a string of 1 to {CLIENT_ID_MAX_LENGTH} characters.", "client_id"
        )


@dataclass
class MessageResult:
    message: Message
    created: bool  # False: the client_id was seen before and `message` is the original
    published: bool = False  # the broadcast reached the channel layer (set after commit)


def _existing(*, room: Room, user: User, client_id: str | None) -> Message | None:
    if client_id is None:
        return None
    return Message.objects.select_related("room", "user").filter(room=room, user=user, client_id=client_id).first()


def message_create(*, room: Room, user: User, content, client_id=None) -> MessageResult:
    """Store a message with the room's next seq and broadcast it once committed.

    A client_id already used by this user in this room returns the original message and
    stores and broadcasts nothing. Over CHAT_MESSAGE_RATE it raises RateLimited.
    """
    message_validate(content=content, client_id=client_id)
    try:
        with transaction.atomic():
            # The row lock serialises writers of one room, so seq follows commit order.
            locked = Room.objects.select_for_update().get(pk=room.pk)
            original = _existing(room=locked, user=user, client_id=client_id)
            if original is not None:
                return MessageResult(original, created=False)
            # Counted once per stored message, whatever the transport; raises RateLimited.
            hit("messages", str(user.pk), parse_rate(settings.CHAT_MESSAGE_RATE))
            locked.last_seq += 1
            locked.save(update_fields=["last_seq"])
            message = Message.objects.create(
                room=locked, user=user, content=content, client_id=client_id, seq=locked.last_seq
            )
            result = MessageResult(message, created=True)

            def publish() -> None:
                result.published = publish_message(message)

            transaction.on_commit(publish)
    except IntegrityError:
        # Only the client_id constraint can race here (seq is allocated under the lock).
        original = _existing(room=room, user=user, client_id=client_id)
        if original is None:
            raise
        return MessageResult(original, created=False)
    return result


class RoomRejected(Exception):
    def __init__(self, field: str, detail: str):
        super().__init__(detail)
        self.field = field
        self.detail = detail


def room_create(*, user: User, name, title="") -> Room:
    """Create a room; users' room creations count against CHAT_MESSAGE_RATE like their messages."""
    if not isinstance(name, str) or not SLUG.fullmatch(name):
        raise RoomRejected("name", "Use 1-50 letters, digits, hyphens or underscores.")
    if title is None:
        title = ""
    if not isinstance(title, str) or len(title) > ROOM_TITLE_MAX_LENGTH or not _is_storable_text(title):
        raise RoomRejected("title", f"Use a text of at most {ROOM_TITLE_MAX_LENGTH} characters.")
    if Room.objects.filter(name__iexact=name).exists():
        raise RoomRejected("name", "A room with that name already exists.")
    hit("messages", str(user.pk), parse_rate(settings.CHAT_MESSAGE_RATE))
    try:
        with transaction.atomic():
            return Room.objects.create(name=name, title=title.strip())
    except IntegrityError as exc:
        raise RoomRejected("name", "A room with that name already exists.") from exc
