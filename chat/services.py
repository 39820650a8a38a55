"""Writes on rooms and messages. Every transport (REST, WebSocket, admin, commands) calls these."""

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import User
from chat.audit import audit_record, audit_record_many
from chat.events import publish_message, publish_message_deleted
from chat.models import Message, Mute, Room
from chatproject.ratelimit import hit, parse_rate

CLIENT_ID_MAX_LENGTH = 64
ROOM_TITLE_MAX_LENGTH = 200
SLUG = re.compile(r"[-a-zA-Z0-9_]{1,50}")


class MessageRejected(Exception):
    """A message that will not be stored. `code` is the WebSocket error code, `field` the REST field."""

    def __init__(self, code: str, detail: str, field: str = "content", extra: dict | None = None):
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.field = field
        self.extra = extra or {}


class MessageForbidden(MessageRejected):
    """The sender may not post here now (muted, or the room is archived): REST 403."""


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
            _check_may_post(room=locked, user=user)
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


def mute_active_until(*, room: Room, user: User) -> datetime | None:
    """The end of the user's longest running mute in the room, or None."""
    mute = Mute.objects.filter(room=room, user=user, until__gt=timezone.now()).order_by("-until").first()
    return mute.until if mute else None


def _check_may_post(*, room: Room, user: User) -> None:
    if room.archived_at is not None:
        raise MessageForbidden("archived", "This room is archived; its history is read-only.")
    until = mute_active_until(room=room, user=user)
    if until is not None:
        until_text = until.astimezone(UTC).isoformat()
        raise MessageForbidden("muted", f"You are muted in this room until {until_text}.", extra={"until": until_text})


def message_delete(*, messages: Iterable[Message], actor: User | None = None) -> int:
    """Delete messages and tell each room's sockets once committed; seqs are never reused."""
    deleted = 0
    with transaction.atomic():
        ids = [m.pk for m in messages]
        # Locked so a concurrent delete of the same rows announces each message once.
        rows = list(Message.objects.select_for_update().filter(pk__in=ids).select_related("room", "user"))
        audit_record_many(
            actor=actor,
            action="message_delete",
            targets_details=(
                (m, {"room": m.room.name, "seq": m.seq, "user": m.user.username, "content": m.content[:200]})
                for m in rows
            ),
        )
        deleted, _ = Message.objects.filter(pk__in=[m.pk for m in rows]).delete()
        for message in rows:
            transaction.on_commit(
                lambda m=message: publish_message_deleted(
                    room_id=m.room_id, room_name=m.room.name, message_id=m.pk, seq=m.seq
                )
            )
    return deleted


@transaction.atomic
def mute_create(*, user: User, room: Room, until: datetime, actor: User | None = None) -> Mute:
    """Forbid the user to post in the room until `until`."""
    mute = Mute.objects.create(user=user, room=room, until=until, created_by=actor)
    audit_record(actor=actor, action="mute", target=user, detail={"room": room.name, "until": until.isoformat()})
    return mute


@transaction.atomic
def room_archive(*, room: Room, actor: User | None = None) -> Room:
    """Make the room read-only: its history stays readable, sends are refused."""
    if room.archived_at is None:
        room.archived_at = timezone.now()
        room.save(update_fields=["archived_at"])
        audit_record(actor=actor, action="room_archive", target=room)
    return room


@transaction.atomic
def room_unarchive(*, room: Room, actor: User | None = None) -> Room:
    """Let the room accept messages again."""
    if room.archived_at is not None:
        room.archived_at = None
        room.save(update_fields=["archived_at"])
        audit_record(actor=actor, action="room_unarchive", target=room)
    return room


@transaction.atomic
def room_update(*, room: Room, title: str, actor: User | None = None) -> Room:
    """Change a room's title (its name is fixed: it is in clients' URLs)."""
    room.title = title.strip()
    room.save(update_fields=["title"])
    audit_record(actor=actor, action="room_change", target=room, detail={"title": room.title})
    return room


class RoomRejected(Exception):
    def __init__(self, field: str, detail: str):
        super().__init__(detail)
        self.field = field
        self.detail = detail


def room_create(*, user: User | None, name, title="", actor: User | None = None) -> Room:
    """Create a room; users' room creations count against CHAT_MESSAGE_RATE like their messages.

    `user` None is an operator at the shell (no rate limit); `actor` records the creation in the audit log.
    """
    if not isinstance(name, str) or not SLUG.fullmatch(name):
        raise RoomRejected("name", "Use 1-50 letters, digits, hyphens or underscores.")
    if title is None:
        title = ""
    if not isinstance(title, str) or len(title) > ROOM_TITLE_MAX_LENGTH or not _is_storable_text(title):
        raise RoomRejected("title", f"Use a text of at most {ROOM_TITLE_MAX_LENGTH} characters.")
    if Room.objects.filter(name__iexact=name).exists():
        raise RoomRejected("name", "A room with that name already exists.")
    if user is not None:
        hit("messages", str(user.pk), parse_rate(settings.CHAT_MESSAGE_RATE))
    try:
        with transaction.atomic():
            room = Room.objects.create(name=name, title=title.strip())
            if actor is not None or user is None:
                audit_record(actor=actor, action="room_create", target=room, detail={"title": room.title})
            return room
    except IntegrityError as exc:
        raise RoomRejected("name", "A room with that name already exists.") from exc
