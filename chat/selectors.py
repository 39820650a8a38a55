"""Reads on rooms and messages."""

from accounts.models import User
from chat import sql
from chat.models import ROOM_NAME, Message, Room
from chat.presence import presence


def room_get(*, name: str) -> Room | None:
    if not ROOM_NAME.fullmatch(name):
        return None
    # Plain SQL: every WebSocket connect asks, and the ORM's query (with Room's ordering) cost
    # several times what the database takes to answer it.
    return sql.instance(Room, "name = %s", [name])


def room_object(*, name: str, title: str, online: int, archived_at) -> dict:
    """A room as the API shows it, in GET /rooms and in POST /rooms' answer."""
    return {"name": name, "title": title, "online": online, "archived": archived_at is not None}


def room_list() -> list[dict]:
    """Every room with the number of distinct users connected to it now, and whether it is archived."""
    # Values, not models: building a Room per row took seven times as long as reading the rows.
    rooms = list(Room.objects.values_list("pk", "name", "title", "archived_at"))
    online = presence.online_counts([pk for pk, *_ in rooms])
    return [
        room_object(name=name, title=title, online=online.get(pk, 0), archived_at=archived_at)
        for pk, name, title, archived_at in rooms
    ]


MESSAGE_ROW_FIELDS = ("id", "seq", "content", "created", "client_id", "user_id", "user__username")


def message_list(
    *, room: Room, limit: int = 50, skip: int = 0, before: int | None = None, after: int | None = None
) -> list[dict]:
    """A page of the room's history as rows (events.message_payload_from_row shapes them), newest
    first, or oldest first when `after` is given. Rows, not models, and one query in plain SQL
    (chat.sql): compiling the equivalent queryset took longer than running it."""
    where, params = ["m.room_id = %s"], [room.pk]
    if before is not None:
        where.append("m.seq < %s")
        params.append(before)
    if after is not None:
        where.append("m.seq > %s")
        params.append(after)
    found = sql.rows(
        "SELECT m.id, m.seq, m.content, m.created, m.client_id, m.user_id, u.username "
        f"FROM {sql.table(Message)} m JOIN {sql.table(User)} u ON u.id = m.user_id "
        f"WHERE {' AND '.join(where)} ORDER BY m.seq {'ASC' if after is not None else 'DESC'} LIMIT %s OFFSET %s",
        [*params, limit, skip],
    )
    created = sql.converter(Message, "created")
    return [dict(zip(MESSAGE_ROW_FIELDS, (*row[:3], created(row[3]), *row[4:]), strict=True)) for row in found]


def message_replay(*, room_id: int, after: int, limit: int) -> tuple[list[Message], int]:
    """Messages with seq > after, oldest first, and the room's last seq at the same moment."""
    # Every seq <= last_seq is committed once last_seq is (seq follows commit order), so no
    # transaction is needed for the two reads to agree.
    last_seq = Room.objects.filter(pk=room_id).values_list("last_seq", flat=True).first() or 0
    messages = list(
        Message.objects.filter(room_id=room_id, seq__gt=after, seq__lte=last_seq)
        .select_related("user", "room")
        .order_by("seq")[:limit]
    )
    return messages, last_seq


def room_last_seq(*, room_id: int) -> int:
    found = sql.rows(f"SELECT last_seq FROM {sql.table(Room)} WHERE id = %s", [room_id])
    return found[0][0] if found else 0


def room_last_seqs(*, room_ids: list[int]) -> dict[int, int]:
    """The rooms' newest seqs, a few hundred rooms per query."""
    found: dict[int, int] = {}
    for start in range(0, len(room_ids), 500):
        chunk = room_ids[start : start + 500]
        placeholders, params = sql.placeholders(chunk)
        found.update(sql.rows(f"SELECT id, last_seq FROM {sql.table(Room)} WHERE id IN ({placeholders})", params))
    return found


def message_range(*, room_id: int, after: int, upto: int) -> list[Message]:
    """Messages with after < seq <= upto, oldest first (deleted seqs are simply absent)."""
    return list(
        Message.objects.filter(room_id=room_id, seq__gt=after, seq__lte=upto)
        .select_related("user", "room")
        .order_by("seq")
    )


def inactive_user_ids(*, user_ids: list[int]) -> list[int]:
    """Which of these users are deactivated (banned) or deleted, a few hundred ids per query."""
    found: list[int] = []
    for start in range(0, len(user_ids), 500):
        chunk = user_ids[start : start + 500]
        active = set(User.objects.filter(pk__in=chunk, is_active=True).values_list("pk", flat=True))
        found += [user_id for user_id in chunk if user_id not in active]
    return found
