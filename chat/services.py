"""Writes on rooms and messages. Every transport (REST, WebSocket, admin, commands) calls these."""

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from accounts.models import User
from chat import sql
from chat.audit import audit_record, audit_record_many
from chat.events import publish_messages, publish_messages_deleted
from chat.models import ROOM_NAME, Message, Mute, Room
from chat.text import MAX_STACKED_MARKS, has_stacked_marks, is_blank
from chatproject.ratelimit import RateLimited, hit, hit_many, parse_rate, peek

CLIENT_ID_MAX_LENGTH = 64
ROOM_TITLE_MAX_LENGTH = 200


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


class PosterDeactivated(Exception):
    """The sender was banned (deactivated) after their token or socket was accepted: nothing is stored.
    Their socket closes with 4003; REST answers as for any request of an inactive user (401)."""


def is_storable_text(text: str) -> bool:
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
    if not is_storable_text(content):
        raise MessageRejected("bad_request", "content contains characters that cannot be stored.")
    if is_blank(content):  # zero-width and format characters only: shown as an empty line
        raise MessageRejected("empty", "Message has no visible characters.")
    if client_id is not None and not (
        isinstance(client_id, str) and 1 <= len(client_id) <= CLIENT_ID_MAX_LENGTH and is_storable_text(client_id)
    ):
        raise MessageRejected(
            "bad_request", f"client_id must be a string of 1 to {CLIENT_ID_MAX_LENGTH} characters.", "client_id"
        )


@dataclass
class MessageResult:
    message: Message
    created: bool  # False: the client_id was seen before and `message` is the original
    published: bool = False  # the broadcast reached the channel layer (set after commit)


@dataclass(frozen=True)
class MessageRequest:
    room: Room
    user: User
    content: object
    client_id: object = None


def message_create(*, room: Room, user: User, content, client_id=None) -> MessageResult:
    """Store a message with the room's next seq and broadcast it once committed.

    A client_id already used by this user in this room returns the original message and
    stores and broadcasts nothing. Over CHAT_MESSAGE_RATE it raises RateLimited.
    """
    outcome = message_create_many([MessageRequest(room=room, user=user, content=content, client_id=client_id)])[0]
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def message_create_many(requests: list[MessageRequest], *, publish: bool = True) -> list[MessageResult | Exception]:
    """Store concurrent messages in one transaction (group commit), each as message_create would.

    Returns one outcome per request, in order: a MessageResult, or the exception that refused
    that request alone (MessageRejected, MessageForbidden, RateLimited). Seqs follow the
    requests' order within each room. Every stored message is broadcast once committed; with
    publish=False the caller broadcasts the created ones (events.apublish_messages) instead.
    """
    return _create_many(requests, publish=publish, rated={}, retry=True)


def _create_many(requests: list[MessageRequest], *, publish: bool, rated: dict, retry: bool) -> list:
    outcomes: list = [None] * len(requests)
    valid = []
    for index, request in enumerate(requests):
        try:
            message_validate(content=request.content, client_id=request.client_id)
        except MessageRejected as exc:
            outcomes[index] = exc
        else:
            valid.append(index)
    if not valid:
        return outcomes
    try:
        with transaction.atomic():
            created = _store(requests, valid, outcomes, rated)

            def publish_created() -> None:
                for result, published in zip(created, publish_messages([r.message for r in created]), strict=True):
                    result.published = published

            if created and publish:
                transaction.on_commit(publish_created)
    except IntegrityError:
        # Only a client_id can collide here (seqs are allocated under the rooms' locks). Every writer
        # looks for repeats once it holds the room, so this is the last guard, for a row stored some
        # other way: the batch rolled back; once more, it finds the repeat. Should that fail too, its
        # requests are stored one by one. Rate checks made are not made again.
        if retry:
            return _create_many(requests, publish=publish, rated=rated, retry=False)
        if len(requests) == 1:
            request = requests[0]
            original = _existing(requests, [0]).get(_key(request))
            if original is None:
                raise
            return [MessageResult(original, created=False)]
        return [_create_many([request], publish=publish, rated=rated, retry=False)[0] for request in requests]
    return outcomes


def _key(request: MessageRequest) -> tuple | None:
    if request.client_id is None:
        return None
    return (request.user.pk, request.room.pk, request.client_id)


# The queries of a batch are written in SQL (chat.sql): built by the ORM they cost the writer
# thread about 2 ms of query compilation per batch, more than the database takes to run them.
# Rows come back as models only on the rare paths (a repeat, a mute).


def _existing(requests: list[MessageRequest], indexes: list[int]) -> dict[tuple, Message]:
    """The stored messages that already carry the requests' client_ids, by (user, room, client_id)."""
    keys = {_key(requests[i]) for i in indexes} - {None}
    if not keys:
        return {}
    repeats, params = _values_table("repeats(user_id, room_id, client_id)", REPEAT_TYPES, keys)
    return _stored_repeats(keys, sql.rows(f"WITH {repeats} SELECT {_repeats_join()}", params))


# The batch's keys are sent as a table (WITH name AS (VALUES ...)) joined on the indexed columns:
# each key is one probe of the index. With an IN list per column the database probed every
# combination, or read the whole table when it judged that cheaper (10 ms at 100,000 messages).


def _values_table(name: str, types: tuple[str, ...], rows: set[tuple]) -> tuple[str, list]:
    """`name(columns) AS (VALUES (...), ...)` for a WITH clause, and its parameters. Each value is
    cast to its column's type: where parameters are bound by the server, they have none."""
    assert rows, "a VALUES table has at least one row"
    row = f"({', '.join(f'CAST(%s AS {t})' for t in types)})"
    return f"{name} AS (VALUES {', '.join([row] * len(rows))})", [value for values in rows for value in values]


def _arrays() -> bool:
    """On PostgreSQL the batch's statements take one array per column, bound on the server
    (sql.cursor(server_binding=True)), instead of a placeholder per value: psycopg rewrote a text of
    hundreds of placeholders with every value quoted into it on every call, and the server parsed
    that long text, which cost the writer's thread more than the statements took to run. Now the
    text is short and the same for every batch, with six or seven parameters."""
    return connection.vendor == "postgresql"


def _array_table(name: str, types: tuple[str, ...], rows) -> tuple[str, list]:
    """`name(columns) AS (SELECT * FROM unnest(...))` for a WITH clause, one array per column."""
    arrays = ", ".join(f"CAST(%s AS {t}[])" for t in types)
    columns = [list(column) for column in zip(*rows, strict=True)] or [[] for _ in types]
    return f"{name} AS (SELECT * FROM unnest({arrays}))", columns


REPEAT_TYPES = ("BIGINT", "BIGINT", f"VARCHAR({CLIENT_ID_MAX_LENGTH})")


def _repeats_join() -> str:
    """(id, user_id, room_id, client_id) of the stored messages with the keys of the `repeats` table."""
    return (
        f"m.id, m.user_id, m.room_id, m.client_id FROM {sql.table(Message)} m JOIN repeats k "
        "ON m.user_id = k.user_id AND m.room_id = k.room_id AND m.client_id = k.client_id"
    )


def _stored_repeats(keys: set[tuple], rows: list[tuple]) -> dict[tuple, Message]:
    """From rows (id, user_id, room_id, client_id), the messages whose key is one of `keys`."""
    ids = [row[0] for row in rows if tuple(row[1:]) in keys]
    if not ids:
        return {}
    found = Message.objects.select_related("room", "user").filter(pk__in=ids)
    return {(m.user_id, m.room_id, m.client_id): m for m in found}


def _mute_ends(muted: set[tuple[int, int]], now: datetime) -> dict[tuple[int, int], datetime]:
    """The end of the longest running mute of each muted (user, room)."""
    if not muted:
        return {}
    mutes = Mute.objects.filter(
        until__gt=now, user_id__in={p[0] for p in muted}, room_id__in={p[1] for p in muted}
    ).values_list("user_id", "room_id", "until")
    ends: dict[tuple[int, int], datetime] = {}
    for user_id, room_id, until in mutes:
        pair = (user_id, room_id)
        if pair in muted and (pair not in ends or until > ends[pair]):
            ends[pair] = until
    return ends


ROOM, REPEAT, MUTE, DEACTIVATED = 0, 1, 2, 3  # what a row of _read_batch's statement answers


def _read_batch(requests: list[MessageRequest], valid: list[int]) -> tuple[dict, dict, dict, set]:
    """Lock the batch's rooms and read what it must know: one statement on SQLite, two on PostgreSQL.

    Returns {room id: (last_seq, archived)}, the stored repeats of the batch's client_ids
    ({(user, room, client_id): Message}), the running mutes' ends ({(user, room): until}), and the
    ids of senders banned or deleted since their socket or token was accepted.
    The rooms' rows are locked in id order (batches never deadlock); the locks serialise writers
    of a room, so seq follows commit order. SQLite has no row locks; its IMMEDIATE transaction
    already holds the database's write lock, so what it reads next is what has committed.
    PostgreSQL reads each statement as the database was when the statement began, the rows it locks
    apart: a ban that commits while the batch waits for a room's lock (another node's batch holds
    it) would go unseen by the statement that waited. So the rooms are locked first, and the rest is
    read by a statement of its own once they are held; it also share-locks the senders' rows, so
    that a ban begun meanwhile waits for this batch's commit (its messages come before the ban) and
    one in progress is awaited (its messages are refused). A mute needs no such care: its foreign
    keys are checked when it commits, which waits for the batch that holds its room. Whoever else
    locks a room or a user's row locks only its own table's rows (`of=("self",)`): a lock on a room
    and then a user, against the batch's room and then its senders, would deadlock. The unique
    constraint on client_ids is the last guard (message_create_many's IntegrityError).
    """
    arrays = _arrays()
    locking = connection.features.has_select_for_update
    room_ids = sorted({requests[i].room.pk for i in valid})
    if arrays:
        rooms_wanted, room_params = "id = ANY(CAST(%s AS BIGINT[]))", [room_ids]
    else:
        placeholders, room_params = sql.placeholders(room_ids)
        rooms_wanted = f"id IN ({placeholders})"
    rooms_read = (
        f"SELECT {ROOM}, id, last_seq, CASE WHEN archived_at IS NULL THEN 0 ELSE 1 END, NULL "
        f"FROM {sql.table(Room)} WHERE {rooms_wanted} ORDER BY id"
    )
    rows = []
    if locking:
        rows += sql.rows(f"{rooms_read} FOR UPDATE", room_params, server_binding=arrays)
        tables, parts, params = [], [], []
    else:
        tables, parts, params = [f"locked AS ({rooms_read})"], ["SELECT * FROM locked"], list(room_params)
    keys = {_key(requests[i]) for i in valid} - {None}
    table = _array_table if arrays else _values_table
    if keys or arrays:  # with arrays, the same statement whether or not the batch has client_ids
        repeats, repeat_params = table("repeats(user_id, room_id, client_id)", REPEAT_TYPES, keys)
        tables.append(repeats)
        params += repeat_params
        parts.append(f"SELECT {REPEAT}, {_repeats_join()}")
    pairs = {(requests[i].user.pk, requests[i].room.pk) for i in valid}
    posters, poster_params = table("posters(user_id, room_id)", ("BIGINT", "BIGINT"), pairs)
    tables.append(posters)
    params += poster_params
    senders = sql.table(User)
    if locking:
        tables.append(
            f"senders AS (SELECT id, is_active FROM {senders} WHERE id IN (SELECT user_id FROM posters) "
            "ORDER BY id FOR SHARE)"
        )
        senders = "senders"
    now = timezone.now()
    params.append(connection.ops.adapt_datetimefield_value(now))
    parts.append(
        f"SELECT {MUTE}, m.user_id, m.room_id, 0, NULL FROM {sql.table(Mute)} m JOIN posters p "
        "ON m.user_id = p.user_id AND m.room_id = p.room_id WHERE m.until > %s"
    )
    # Banned, or deleted: a deleted sender's row would fail the whole batch on its foreign key.
    parts.append(
        f"SELECT {DEACTIVATED}, p.user_id, 0, 0, NULL FROM posters p WHERE NOT EXISTS "
        f"(SELECT 1 FROM {senders} u WHERE u.id = p.user_id AND u.is_active)"
    )
    rows += sql.rows(f"WITH {', '.join(tables)} {' UNION ALL '.join(parts)}", params, server_binding=arrays)
    rooms = {row[1]: (row[2], bool(row[3])) for row in rows if row[0] == ROOM}
    repeats = _stored_repeats(keys, [row[1:] for row in rows if row[0] == REPEAT])
    muted = {(row[1], row[2]) for row in rows if row[0] == MUTE}
    deactivated = {row[1] for row in rows if row[0] == DEACTIVATED}
    return rooms, repeats, _mute_ends(muted, now), deactivated


def _store(requests: list[MessageRequest], valid: list[int], outcomes: list, rated: dict) -> list[MessageResult]:
    rooms, existing, mutes, deactivated = _read_batch(requests, valid)
    # First what refuses a request on its own, then the rate (one cache round trip for the batch),
    # then the seqs, in the requests' order.
    postable, first_of_key, repeats_in_batch = [], {}, []
    for index in valid:
        request = requests[index]
        room_id, key = request.room.pk, _key(request)
        if room_id not in rooms:
            outcomes[index] = Room.DoesNotExist(f"Room {room_id} no longer exists.")
        elif request.user.pk in deactivated:
            outcomes[index] = PosterDeactivated(f"User {request.user.pk} is deactivated.")
        elif key in existing:
            outcomes[index] = MessageResult(existing[key], created=False)
        elif key in first_of_key:  # the same client_id twice in one batch: the second is a repeat
            repeats_in_batch.append((index, first_of_key[key]))
        else:
            try:
                _check_may_post(archived=rooms[room_id][1], until=mutes.get((request.user.pk, room_id)))
            except MessageForbidden as exc:
                outcomes[index] = exc
                continue
            postable.append(index)
            if key is not None:
                first_of_key[key] = index
    last_seqs = {room_id: last_seq for room_id, (last_seq, _) in rooms.items()}
    created: list[MessageResult] = []
    for index, refused in zip(postable, _rate_checks([requests[i] for i in postable], rated), strict=True):
        if refused is not None:
            outcomes[index] = refused
            continue
        request = requests[index]
        last_seqs[request.room.pk] += 1
        # The sender's Room instance: its name and id are what the message needs (its other
        # fields may be as old as the socket; the rows just locked are the current ones).
        message = Message(room=request.room, user=request.user, content=request.content, client_id=request.client_id)
        message.seq = last_seqs[request.room.pk]
        outcomes[index] = result = MessageResult(message, created=True)
        created.append(result)
    for index, first in repeats_in_batch:  # the original's outcome: its message, or its refusal
        original = outcomes[first]
        if isinstance(original, MessageResult):
            outcomes[index] = MessageResult(original.message, created=False)
        else:
            outcomes[index] = rated[id(requests[index])] = original  # refused alike, were it stored alone
    if created:
        _insert([r.message for r in created])
        _set_last_seqs({room_id: last_seqs[room_id] for room_id in {r.message.room_id for r in created}})
    return created


def _rate_checks(requests: list[MessageRequest], rated: dict) -> list:
    """Count each message once, whatever the transport, even when its batch is stored again
    (`rated` keeps each request's verdict): per request, the RateLimited refusing it, or None."""
    new = [request for request in requests if id(request) not in rated]
    rate = parse_rate(settings.CHAT_MESSAGE_RATE)
    for request, verdict in zip(new, hit_many("messages", [str(r.user.pk) for r in new], rate), strict=True):
        rated[id(request)] = verdict
    return [rated[id(request)] for request in requests]


def _set_last_seqs(last_seqs: dict[int, int]) -> None:
    """Every room's new last_seq in one statement (a round trip per room cost more than the insert).
    The casts give the values a type where parameters are bound by the server."""
    pairs = sorted(last_seqs.items())
    if _arrays():
        seqs, params = _array_table("seqs(id, last_seq)", ("BIGINT", "BIGINT"), pairs)
        sql.execute(
            f"WITH {seqs} UPDATE {sql.table(Room)} r SET last_seq = seqs.last_seq FROM seqs WHERE r.id = seqs.id",
            params,
            server_binding=True,
        )
        return
    cases = " ".join(["WHEN %s THEN CAST(%s AS BIGINT)"] * len(last_seqs))
    ids, id_params = sql.placeholders(room_id for room_id, _ in pairs)
    sql.execute(
        f"UPDATE {sql.table(Room)} SET last_seq = CASE id {cases} END WHERE id IN ({ids})",
        [*(value for pair in pairs for value in pair), *id_params],
    )


def _insert(messages: list[Message]) -> None:
    """INSERT the messages, as few statements as the database's parameter limit allows; each message
    gets its id and its creation time."""
    now = timezone.now()
    for message in messages:
        message.created = now
    columns = ("room_id", "user_id", "content", "created", "client_id", "seq")
    if _arrays():
        ids = _insert_arrays(messages, columns)
    else:
        per_statement = (connection.features.max_query_params or len(messages) * len(columns)) // len(columns)
        ids = []
        for start in range(0, len(messages), per_statement):
            ids += _insert_rows(messages[start : start + per_statement], columns)
    # Matched by (room, seq), which is unique: RETURNING promises no order.
    by_key = {(room_id, seq): message_id for message_id, room_id, seq in ids}
    for message in messages:
        message.id = by_key[(message.room_id, message.seq)]
        message._state.adding = False
        message._state.db = connection.alias


# The type of each inserted column, as its array is cast on PostgreSQL. client_id as TEXT: a cast to
# the column's VARCHAR(64) would cut a longer one short; stored into the column, it is refused instead
# (validation lets none through).
INSERT_TYPES = {
    "room_id": "BIGINT",
    "user_id": "BIGINT",
    "content": "TEXT",
    "created": "TIMESTAMPTZ",
    "client_id": "TEXT",
    "seq": "BIGINT",
}


def _insert_arrays(messages: list[Message], columns: tuple[str, ...]) -> list[tuple]:
    """One INSERT of every message, a column to an array (PostgreSQL); (id, room_id, seq) of each row."""
    names = ", ".join(columns)
    values, params = _array_table(
        f"inserted({names})",
        tuple(INSERT_TYPES[column] for column in columns),
        [tuple(getattr(m, column) for column in columns) for m in messages],
    )
    return sql.rows(
        f"WITH {values} INSERT INTO {sql.table(Message)} ({names}) "
        f"SELECT {names} FROM inserted RETURNING id, room_id, seq",
        params,
        server_binding=True,
    )


def _insert_rows(messages: list[Message], columns: tuple[str, ...]) -> list[tuple]:
    """One INSERT; (id, room_id, seq) of each row."""
    stored_now = connection.ops.adapt_datetimefield_value(messages[0].created)
    row = f"({', '.join(['%s'] * len(columns))})"
    params = []
    for m in messages:
        params += [m.room_id, m.user_id, m.content, stored_now, m.client_id, m.seq]
    table = sql.table(Message)
    insert = f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([row] * len(messages))}"
    if connection.features.can_return_rows_from_bulk_insert:
        return sql.rows(f"{insert} RETURNING id, room_id, seq", params)
    with connection.cursor() as cursor:  # SQLite before 3.35 has no RETURNING: the ids are read back
        cursor.execute(insert, params)
    rooms, room_params = sql.placeholders({m.room_id for m in messages})
    seqs, seq_params = sql.placeholders({m.seq for m in messages})
    return sql.rows(
        f"SELECT id, room_id, seq FROM {table} WHERE room_id IN ({rooms}) AND seq IN ({seqs})",
        [*room_params, *seq_params],
    )


def _check_may_post(*, archived: bool, until: datetime | None) -> None:
    if archived:
        raise MessageForbidden("archived", "This room is archived; its history is read-only.")
    if until is not None:
        until_text = until.astimezone(UTC).isoformat()
        raise MessageForbidden("muted", f"You are muted in this room until {until_text}.", extra={"until": until_text})


# Messages deleted together go in transactions of this many: on SQLite a transaction holds the
# whole database, and the chat's writer waits for one chunk at most, not for all of a spammer's messages.
DELETE_CHUNK = 500


def message_delete(
    *,
    messages: Iterable[Message] | QuerySet,
    actor: User | None = None,
    record: Callable[[list[Message]], None] | None = None,
) -> int:
    """Delete messages and tell each room's sockets once committed; seqs are never reused.

    Each deletion is recorded in the audit log with the start of the message (what a moderator
    removed, and why). A caller that records the deletion its own way passes `record`, called with
    each chunk's messages inside the chunk's transaction (purge_messages: a retention purge keeps
    none of the text it removes)."""
    if isinstance(messages, QuerySet):
        ids = sorted(messages.order_by().values_list("pk", flat=True))
    else:
        ids = sorted(m.pk for m in messages)
    chunks = (ids[start : start + DELETE_CHUNK] for start in range(0, len(ids), DELETE_CHUNK))
    return sum(_delete_chunk(chunk, actor, record) for chunk in chunks)


@transaction.atomic
def _delete_chunk(ids: list[int], actor: User | None, record) -> int:
    # Locked so a concurrent delete of the same rows announces each message once.
    # Only the messages' rows: with their rooms and authors too, a delete would lock a room while a
    # batch holding another room waits for the author's row, and the other way round (a deadlock).
    rows = list(Message.objects.select_for_update(of=("self",)).filter(pk__in=ids).select_related("room", "user"))
    if record is not None:
        if rows:
            record(rows)
    else:
        audit_record_many(
            actor=actor,
            action="message_delete",
            targets_details=(
                (m, {"room": m.room.name, "seq": m.seq, "user": m.user.username, "content": m.content[:200]})
                for m in rows
            ),
        )
    deleted, _ = Message.objects.filter(pk__in=[m.pk for m in rows]).delete()
    if rows:
        transaction.on_commit(lambda: publish_messages_deleted(rows))
    return deleted


class PurgeRecord:
    """A retention purge's one audit entry, for message_delete's `record`: written with the first deleted
    chunk and its count raised with each later one, in that chunk's transaction, so it counts exactly
    what was deleted however the purge ends. The text of what it removed is not kept."""

    def __init__(self, *, cutoff: datetime, room: Room | None):
        self.cutoff, self.room, self.entry = cutoff, room, None

    def __call__(self, messages: list[Message]) -> None:
        if self.entry is None:
            detail = {"before": self.cutoff.isoformat(), "room": getattr(self.room, "name", None), "deleted": 0}
            self.entry = audit_record(actor=None, action="purge_messages", target=self.room, detail=detail)
        self.entry.detail["deleted"] += len(messages)
        self.entry.save(update_fields=["detail"])


def mute_until_error(until: datetime) -> str | None:
    """Why a mute cannot end at `until`, or None."""
    if until <= timezone.now():
        return "A mute must end in the future."
    return None


@transaction.atomic
def mute_create(*, user: User, room: Room, until: datetime, actor: User | None = None) -> Mute:
    """Forbid the user to post in the room until `until`."""
    mute = Mute.objects.create(user=user, room=room, until=until, created_by=actor)
    audit_record(actor=actor, action="mute", target=user, detail={"room": room.name, "until": until.isoformat()})
    return mute


@transaction.atomic
def mute_delete(*, mutes: Iterable[Mute], actor: User | None = None) -> int:
    """Lift mutes early, each recorded in the audit log as an unmute."""
    # Locked so that two moderators deleting the same mute record one unmute.
    # Only the mutes' rows (see _delete_chunk).
    mutes_wanted = Mute.objects.filter(pk__in=[m.pk for m in mutes])
    rows = list(mutes_wanted.select_for_update(of=("self",)).select_related("user", "room"))
    audit_record_many(
        actor=actor,
        action="unmute",
        targets_details=((m.user, {"room": m.room.name, "until": m.until.isoformat()}) for m in rows),
    )
    deleted, _ = Mute.objects.filter(pk__in=[m.pk for m in rows]).delete()
    return deleted


@transaction.atomic
def room_archive(*, room: Room, actor: User | None = None) -> bool:
    """Make the room read-only: its history stays readable, sends are refused. Returns whether it
    changed (a room already archived is left alone, and nothing is recorded)."""
    if not _lock_room(room) or room.archived_at is not None:
        return False
    room.archived_at = timezone.now()
    room.save(update_fields=["archived_at"])
    audit_record(actor=actor, action="room_archive", target=room)
    return True


@transaction.atomic
def room_unarchive(*, room: Room, actor: User | None = None) -> bool:
    """Let the room accept messages again. Returns whether it was archived."""
    if not _lock_room(room) or room.archived_at is None:
        return False
    room.archived_at = None
    room.save(update_fields=["archived_at"])
    audit_record(actor=actor, action="room_unarchive", target=room)
    return True


def _lock_room(room: Room) -> bool:
    """Lock the room's row until the transaction ends and bring the instance's archived_at up to date
    (two moderators archiving at once: the second records nothing); False when the room is gone."""
    found = list(Room.objects.select_for_update().filter(pk=room.pk).values_list("archived_at", flat=True))
    if not found:
        return False
    room.archived_at = found[0]
    return True


@transaction.atomic
def room_update(*, room: Room, title: str, actor: User | None = None) -> Room:
    """Change a room's title (its name is fixed: it is in clients' URLs)."""
    error = room_title_error(title)
    if error:
        raise RoomRejected("title", error)
    before = Room.objects.filter(pk=room.pk).values_list("title", flat=True).first()
    room.title = stored_title(title)
    room.save(update_fields=["title"])
    audit_record(actor=actor, action="room_change", target=room, detail={"title": room.title, "before": before})
    return room


class RoomRejected(Exception):
    def __init__(self, field: str, detail: str):
        super().__init__(detail)
        self.field = field
        self.detail = detail


# What would make a title lie about itself in the room list: line breaks (the line and paragraph
# separators too) and other control characters, and the bidirectional embeddings, overrides and isolates
# that reorder the text around them.
_TITLE_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def room_title_error(title) -> str | None:
    """Why `title` cannot be a room's title, or None."""
    if not isinstance(title, str):
        return "Must be a string."
    if len(title) > ROOM_TITLE_MAX_LENGTH:
        return f"Use a text of at most {ROOM_TITLE_MAX_LENGTH} characters."
    if _TITLE_FORBIDDEN.search(title) or not is_storable_text(title):
        return "Use one line of text, without control or text-direction characters."
    if has_stacked_marks(title):
        return f"Use at most {MAX_STACKED_MARKS} accents or other combining marks on one character."
    return None


def stored_title(title: str) -> str:
    """The title as stored: trimmed, and empty (the room shows its name) when it would show nothing."""
    return "" if is_blank(title) else title.strip()


def room_create(*, user: User | None, name, title="", actor: User | None = None) -> Room:
    """Create a room; a user's creations count against CHAT_MESSAGE_RATE like their messages, and
    against ROOM_CREATE_RATE.

    `user` None is an operator at the shell (no rate limit); `actor` records the creation in the audit log.
    """
    if not isinstance(name, str) or not ROOM_NAME.fullmatch(name):
        raise RoomRejected("name", "Use 1-50 letters, digits, hyphens or underscores.")
    if title is None:
        title = ""
    error = room_title_error(title)
    if error:
        raise RoomRejected("title", error)
    if Room.objects.filter(name__iexact=name).exists():
        raise RoomRejected("name", "A room with that name already exists.")
    if user is not None:
        # Every user sees every room in the list: rooms come slower than messages. A creation the
        # room limit refuses leaves the user's message slots alone.
        room_rate = parse_rate(settings.ROOM_CREATE_RATE)
        retry_after = peek("rooms", str(user.pk), room_rate)
        if retry_after is not None:
            raise RateLimited(retry_after=retry_after)
        hit("messages", str(user.pk), parse_rate(settings.CHAT_MESSAGE_RATE))
        hit("rooms", str(user.pk), room_rate)
    try:
        with transaction.atomic():
            room = Room.objects.create(name=name, title=stored_title(title))
            if actor is not None or user is None:
                audit_record(actor=actor, action="room_create", target=room, detail={"title": room.title})
            return room
    except IntegrityError as exc:
        raise RoomRejected("name", "A room with that name already exists.") from exc
