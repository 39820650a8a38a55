"""Group commit: services.message_create_many stores a batch in one transaction; chat.writer forms the batches."""

import asyncio
import logging
import re
import threading
import time
from datetime import UTC, timedelta
from types import SimpleNamespace

import pytest
from asgiref.sync import sync_to_async
from django.core.cache import cache
from django.db import OperationalError, connection, connections, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.tests.factories import UserFactory
from chat import events, services, writer
from chat.events import message_payload
from chat.models import Message, Mute, Room
from chat.services import MessageRejected, MessageRequest, MessageResult, message_create_many
from chat.tests.databases import on_postgresql
from chat.tests.factories import RoomFactory, make_message
from chatproject import ratelimit
from chatproject.ratelimit import RateLimited


def outcome_summary(outcome) -> tuple:
    if isinstance(outcome, MessageResult):
        m = outcome.message
        return ("stored" if outcome.created else "repeat", m.room.name, m.seq, m.user.username, m.content, m.client_id)
    return (type(outcome).__name__, getattr(outcome, "code", None))


def statement_kind(sql: str) -> str:
    """What a captured statement does: the batch's lookup (client_ids, mutes, senders; on SQLite it
    reads the rooms too), the lock of its rooms (PostgreSQL), INSERT, UPDATE, or its first word. On
    PostgreSQL the insert and the update start with their arrays (WITH ...)."""
    if "posters(user_id, room_id)" in sql:
        return "lookup"
    if re.match(r"SELECT .* FOR UPDATE$", sql, re.S):
        return "lock"
    if "INSERT INTO" in sql:
        return "INSERT"
    if re.match(r"(WITH .*\) )?UPDATE ", sql, re.S):
        return "UPDATE"
    return sql.split()[0].upper()


def assert_stored_as_returned(returned: list[Message]) -> None:
    """Each message a batch returned is the row stored under its id, as every client sees it."""
    stored = Message.objects.select_related("room", "user").in_bulk([m.pk for m in returned])
    assert [message_payload(m) for m in returned] == [message_payload(stored[m.pk]) for m in returned]


@pytest.mark.django_db
def test_a_batch_gets_one_outcome_per_request_in_order_and_seqs_per_room(
    monkeypatch, django_capture_on_commit_callbacks
):
    general, python = RoomFactory(name="general"), RoomFactory(name="python")
    alice, bob, muted = UserFactory(username="alice"), UserFactory(username="bob"), UserFactory(username="muted")
    make_message(room=general, user=alice, content="earlier", client_id="seen")  # general's seq 1
    until = timezone.now() + timedelta(minutes=5)
    Mute.objects.create(user=muted, room=general, until=until)
    published = []
    monkeypatch.setattr(services, "publish_messages", lambda ms: published.extend(ms) or [True] * len(ms))

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        outcomes = message_create_many(
            [
                MessageRequest(room=general, user=alice, content="one", client_id="a1"),
                MessageRequest(room=python, user=bob, content="first in python"),
                MessageRequest(room=general, user=bob, content="   "),
                MessageRequest(room=general, user=muted, content="let me talk"),
                MessageRequest(room=general, user=alice, content="again", client_id="seen"),
                MessageRequest(room=general, user=alice, content="one, resent", client_id="a1"),
                MessageRequest(room=general, user=bob, content="two"),
            ]
        )

    assert [outcome_summary(o) for o in outcomes] == [
        ("stored", "general", 2, "alice", "one", "a1"),
        ("stored", "python", 1, "bob", "first in python", None),
        ("MessageRejected", "empty"),
        ("MessageForbidden", "muted"),
        ("repeat", "general", 1, "alice", "earlier", "seen"),
        ("repeat", "general", 2, "alice", "one", "a1"),
        ("stored", "general", 3, "bob", "two", None),
    ]
    assert outcomes[3].extra == {"until": until.astimezone(UTC).isoformat()}
    assert len(callbacks) == 1  # one publish for the whole batch, after its one commit
    assert [(m.room.name, m.seq) for m in published] == [("general", 2), ("python", 1), ("general", 3)]
    assert [o.published for o in outcomes if isinstance(o, MessageResult) and o.created] == [True, True, True]
    stored = Message.objects.order_by("room__name", "seq").values_list("room__name", "seq", "content")
    assert list(stored) == [
        ("general", 1, "earlier"),
        ("general", 2, "one"),
        ("general", 3, "two"),
        ("python", 1, "first in python"),
    ]
    general.refresh_from_db(), python.refresh_from_db()
    assert (general.last_seq, python.last_seq) == (3, 1)


@pytest.mark.django_db
def test_a_batch_is_one_transaction_with_a_fixed_number_of_queries(general):
    other = RoomFactory(name="other")
    users = [UserFactory(username=f"user{n}") for n in range(40)]
    requests = [
        MessageRequest(room=(general, other)[n % 2], user=u, content=f"hi from {u.username}", client_id=f"c{n}")
        for n, u in enumerate(users)
    ]

    with CaptureQueriesContext(connection) as queries:
        outcomes = message_create_many(requests)

    assert [o.message.seq for o in outcomes] == [n // 2 + 1 for n in range(40)]
    # one statement locks the rooms and looks up client_ids, mutes and senders (on PostgreSQL the lock
    # is a statement before it); one inserts; one sets both rooms' last_seq (+ transaction bookkeeping)
    statements = [statement_kind(q["sql"]) for q in queries.captured_queries]
    first = ["lock", "lookup"] if connection.vendor == "postgresql" else ["lookup"]
    assert [s for s in statements if s in ("lock", "lookup", "SELECT", "INSERT", "UPDATE")] == [
        *first,
        "INSERT",
        "UPDATE",
    ]
    general.refresh_from_db()
    other.refresh_from_db()
    assert (general.last_seq, other.last_seq) == (20, 20)


@on_postgresql
@pytest.mark.django_db
def test_on_postgresql_every_batch_sends_the_same_four_statements_with_its_values_apart(general):
    rooms = general, other = general, RoomFactory(name="other")
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    make_message(room=general, user=alice, content="earlier", client_id="seen")
    Mute.objects.create(user=bob, room=other, until=timezone.now() + timedelta(minutes=5))
    batches = [
        [MessageRequest(room=general, user=alice, content="alone, no client_id")],
        [
            MessageRequest(room=general, user=alice, content="a repeat", client_id="seen"),
            MessageRequest(room=other, user=bob, content="muted here"),
            MessageRequest(room=general, user=bob, content="b1", client_id="b1"),
            MessageRequest(room=other, user=alice, content="a1", client_id="a1"),
        ],
        [
            MessageRequest(room=(general, other)[n % 2], user=alice, content=f"n{n}", client_id=f"n{n}")
            for n in range(40)
        ],
    ]

    with CaptureQueriesContext(connection) as queries:
        outcomes = [[outcome_summary(o)[:3] for o in message_create_many(batch)] for batch in batches]

    assert outcomes == [
        [("stored", "general", 2)],
        [("repeat", "general", 1), ("MessageForbidden", "muted"), ("stored", "general", 3), ("stored", "other", 1)],
        [("stored", rooms[n % 2].name, (4 + n // 2, 2 + n // 2)[n % 2]) for n in range(40)],
    ]
    kinds = ("lock", "lookup", "INSERT", "UPDATE")
    statements = [q["sql"] for q in queries.captured_queries if statement_kind(q["sql"]) in kinds]
    assert len(statements) == 12 and len(set(statements)) == 4  # the same four texts, whatever the batch
    assert all("$1" in text and "n39" not in text and "seen" not in text for text in statements)


@pytest.mark.django_db
def test_the_messages_a_batch_returns_are_the_stored_rows(general):
    other = RoomFactory(name="other")
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    requests = [
        MessageRequest(room=room, user=user, content=f"{n}", client_id=f"c{n}" if n % 2 else None)
        for n, (room, user) in enumerate([(general, alice), (other, bob), (general, bob), (other, alice)])
    ]

    returned = [outcome.message for outcome in message_create_many(requests)]

    assert_stored_as_returned(returned)
    assert all(not m._state.adding for m in returned)  # saved models: a later save() updates, never inserts


@pytest.mark.django_db
def test_contents_and_client_ids_an_array_literal_would_have_to_escape_are_stored_as_sent(general):
    alice = UserFactory(username="alice")
    sent = [
        ('{"a", NULL}', "NULL"),
        ("NULL", '{"x"}'),
        ("back\\slash \\", None),
        ("quote ' \" and, comma", "a,b"),
        ("héllo 👋\nnew line", None),
        ("{}", '\\"'),
    ]

    outcomes = message_create_many(
        [MessageRequest(room=general, user=alice, content=content, client_id=client_id) for content, client_id in sent]
    )

    assert [(o.created, o.message.seq) for o in outcomes] == [(True, n) for n in range(1, 7)]
    stored = Message.objects.order_by("seq").values_list("content", "client_id")
    assert list(stored) == sent
    assert_stored_as_returned([o.message for o in outcomes])


@pytest.mark.django_db
def test_a_batch_over_the_parameter_limit_is_inserted_in_several_statements(general, monkeypatch):
    monkeypatch.setattr(services, "_arrays", lambda: False)  # PostgreSQL's arrays take one statement
    monkeypatch.setattr(type(connection.features), "max_query_params", 12)  # two rows of six columns
    alice = UserFactory(username="alice")

    with CaptureQueriesContext(connection) as queries:
        returned = [
            o.message
            for o in message_create_many([MessageRequest(room=general, user=alice, content=f"{n}") for n in range(5)])
        ]

    assert [q["sql"].split()[0].upper() for q in queries.captured_queries].count("INSERT") == 3
    assert_stored_as_returned(returned)
    assert [m.seq for m in returned] == [1, 2, 3, 4, 5]


@pytest.mark.django_db
def test_without_insert_returning_the_batch_is_stored_all_the_same(general, monkeypatch):
    monkeypatch.setattr(type(connection.features), "can_return_rows_from_bulk_insert", False)
    other, alice = RoomFactory(name="other"), UserFactory(username="alice")
    requests = [MessageRequest(room=r, user=alice, content=f"{r.name} {n}") for n in (1, 2) for r in (general, other)]

    returned = [outcome.message for outcome in message_create_many(requests)]

    assert_stored_as_returned(returned)
    assert [(m.room.name, m.seq, m.content) for m in returned] == [
        ("general", 1, "general 1"),
        ("other", 1, "other 1"),
        ("general", 2, "general 2"),
        ("other", 2, "other 2"),
    ]


@pytest.mark.django_db
def test_a_rate_limited_request_is_refused_alone(general, settings):
    settings.CHAT_MESSAGE_RATE = "2/min"
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")

    outcomes = message_create_many(
        [MessageRequest(room=general, user=alice, content=str(n)) for n in range(3)]
        + [MessageRequest(room=general, user=bob, content="bob's")]
    )

    assert [outcome_summary(o)[:3] for o in outcomes] == [
        ("stored", "general", 1),
        ("stored", "general", 2),
        ("RateLimited", None),
        ("stored", "general", 3),
    ]
    assert isinstance(outcomes[2], RateLimited)


@pytest.mark.django_db
def test_a_client_id_twice_in_a_batch_is_stored_once_or_refused_once_with_its_first(general, settings):
    settings.CHAT_MESSAGE_RATE = "2/min"
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    requests = [
        MessageRequest(room=general, user=alice, content="a", client_id="a1"),
        MessageRequest(room=general, user=alice, content="a again", client_id="a1"),  # a repeat: not counted
        MessageRequest(room=general, user=alice, content="b", client_id="a2"),
        MessageRequest(room=general, user=alice, content="c", client_id="a3"),  # over the rate
        MessageRequest(room=general, user=alice, content="c again", client_id="a3"),  # its repeat: same refusal
        MessageRequest(room=general, user=bob, content="d", client_id="a1"),  # another user's client_id
    ]

    outcomes = message_create_many(requests)

    assert [outcome_summary(o)[:3] for o in outcomes] == [
        ("stored", "general", 1),
        ("repeat", "general", 1),
        ("stored", "general", 2),
        ("RateLimited", None),
        ("RateLimited", None),
        ("stored", "general", 3),
    ]
    assert outcomes[4] is outcomes[3]
    # a1, a2, a3 were counted; the repeats were not
    window = int(ratelimit.clock() // 60)  # the limiter's clock, which stands still in tests
    counters = [f"rl:messages:{user.pk}:60:{window}" for user in (alice, bob)]
    assert [cache.get(counter) for counter in counters] == [3, 1]
    assert list(Message.objects.order_by("seq").values_list("content", flat=True)) == ["a", "b", "d"]


@pytest.mark.django_db
def test_an_archived_room_refuses_every_request_of_the_batch(general):
    general.archived_at = timezone.now()
    general.save()
    alice = UserFactory(username="alice")

    outcomes = message_create_many([MessageRequest(room=general, user=alice, content="x")] * 2)

    assert [outcome_summary(o) for o in outcomes] == [("MessageForbidden", "archived")] * 2
    assert not Message.objects.exists()


# --- the writer: concurrent sends share a batch -----------------------------------------------


async def room_and_alice(name: str):
    return await sync_to_async(RoomFactory)(name=name), await sync_to_async(UserFactory)(username="alice")


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
async def test_sends_that_arrive_during_a_write_are_stored_together_in_the_next_one(monkeypatch):
    room = await sync_to_async(RoomFactory)(name="busy")
    users = [await sync_to_async(UserFactory)(username=f"u{n}") for n in range(21)]
    batches, first_started, release = [], threading.Event(), threading.Event()
    real = services.message_create_many

    def recording(requests, **options):
        batches.append([r.content for r in requests])
        if len(batches) == 1:
            first_started.set()
            release.wait(10)  # hold the first commit while the others arrive
        return real(requests, **options)

    monkeypatch.setattr(services, "message_create_many", recording)
    the_writer = writer.MessageWriter()

    first = asyncio.create_task(the_writer.create(room=room, user=users[0], content="m0"))
    await sync_to_async(first_started.wait, thread_sensitive=False)(10)
    rest = [
        asyncio.create_task(the_writer.create(room=room, user=u, content=f"m{n}")) for n, u in enumerate(users[1:], 1)
    ]
    await asyncio.sleep(0.05)
    release.set()
    results = await asyncio.gather(first, *rest)

    assert batches == [["m0"], [f"m{n}" for n in range(1, 21)]]
    assert [(r.created, r.message.seq, r.message.content) for r in results] == [
        (True, n + 1, f"m{n}") for n in range(21)
    ]


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
async def test_each_send_of_a_batch_gets_its_own_refusal():
    room, alice = await room_and_alice("mixed")
    the_writer = writer.MessageWriter()

    outcomes = await asyncio.gather(
        the_writer.create(room=room, user=alice, content="fine"),
        the_writer.create(room=room, user=alice, content=""),
        the_writer.create(room=room, user=alice, content="fine too"),
        return_exceptions=True,
    )

    assert outcomes[0].message.seq == 1
    assert isinstance(outcomes[1], MessageRejected) and outcomes[1].code == "empty"
    assert outcomes[2].message.seq == 2


# A statement that fails (a dropped connection, a deadlock) refuses its batch only: the next batch
# runs at once on a new connection, with no pause (that is for a database with no connection to give).
@pytest.mark.parametrize("failure", [ConnectionError("database unavailable"), OperationalError("deadlock detected")])
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
async def test_a_database_failure_refuses_the_batch_and_the_writer_recovers(monkeypatch, failure):
    room, alice = await room_and_alice("flaky")
    real, calls = services.message_create_many, []

    def failing_once(requests, **options):
        calls.append(len(requests))
        if len(calls) == 1:
            raise failure
        return real(requests, **options)

    monkeypatch.setattr(services, "message_create_many", failing_once)
    the_writer = writer.MessageWriter()

    with pytest.raises(type(failure)):
        await the_writer.create(room=room, user=alice, content="lost")
    result = await the_writer.create(room=room, user=alice, content="kept")

    assert (result.created, result.message.seq, result.message.content) == (True, 1, "kept")


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
async def test_with_no_database_to_connect_to_sends_are_refused_at_once_for_a_while_then_tried_again(
    monkeypatch, caplog
):
    room, alice = await room_and_alice("outage")
    backend = type(connections["default"])
    real_ensure, attempts, down = backend.ensure_connection, [], [True]

    def ensure(self):
        if threading.current_thread().name.startswith("chat-writer"):
            attempts.append(1)
            if down[0]:
                raise OperationalError("connection refused")
        return real_ensure(self)

    monkeypatch.setattr(backend, "ensure_connection", ensure)
    probes = []

    class Pool:
        """The pool as the writer's thread sees it: no connection while the database is down; PostgreSQL's
        own pool behind it when there is one."""

        def __init__(self, real):
            self.real = real

        def open(self):
            if self.real is not None:
                self.real.open()

        def getconn(self, timeout=None):
            probes.append(timeout)
            if down[0]:
                raise OperationalError(f"couldn't get a connection after {timeout:.2f} sec")
            return self.real.getconn(timeout) if self.real is not None else "pooled"

        def putconn(self, pooled):
            if self.real is not None:
                self.real.putconn(pooled)

    real_pool = getattr(backend, "pool", None)  # a property on PostgreSQL's backend, absent on SQLite's

    def pool(self):
        real = real_pool.__get__(self) if real_pool is not None else None
        return Pool(real) if threading.current_thread().name.startswith("chat-writer") else real

    monkeypatch.setattr(backend, "pool", property(pool), raising=False)
    now = [1000.0]
    monkeypatch.setattr(writer, "time", SimpleNamespace(monotonic=lambda: now[0]))
    caplog.set_level(logging.WARNING, logger="chat.writer")
    the_writer = writer.MessageWriter()

    async def refused(content: str) -> str:
        with pytest.raises(writer.DatabaseUnavailable) as caught:
            await the_writer.create(room=room, user=alice, content=content)
        return str(caught.value)

    assert await refused("tried") == "connection refused"
    now[0] += writer.DATABASE_PAUSE_SECONDS - 0.1
    assert await refused("not tried") == "the database was unavailable moments ago"
    assert (len(attempts), probes) == (1, [writer.PROBE_SECONDS])  # asked the pool, without waiting
    now[0] += 0.2
    assert await refused("tried again") == "connection refused"
    assert len(attempts) == 2
    now[0] += 1  # still paused, but the database is back and the pool has a connection: stored at once
    down[0] = False
    result = await the_writer.create(room=room, user=alice, content="stored")

    assert (result.created, result.message.seq, result.message.content) == (True, 1, "stored")
    assert [(r.levelname, r.getMessage(), r.exc_info is not None) for r in caplog.records] == [
        ("ERROR", "database unavailable: sends are refused for 5 s at a time until it answers", True),
        ("WARNING", "database still unavailable (connection refused)", False),
        ("WARNING", "database available again; 3 sends refused meanwhile", False),
    ]


@pytest.mark.django_db
def test_history_rows_are_shaped_exactly_like_the_message_object(general):
    from chat import selectors
    from chat.events import message_payload_from_row

    alice = UserFactory(username="Ålice")
    messages = [
        make_message(room=general, user=alice, content="héllo 👋", client_id="c1"),
        make_message(room=general, user=alice, content="no client id"),
    ]

    rows = selectors.message_list(room=general)

    assert [message_payload_from_row(row, general.name) for row in rows] == [
        message_payload(Message.objects.select_related("room", "user").get(pk=m.pk)) for m in reversed(messages)
    ]


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
async def test_the_writer_keeps_its_connection_between_batches_and_replaces_a_broken_one(monkeypatch):
    from django.db import connection as default_connection
    from django.db import connections

    room, alice = await room_and_alice("kept")
    real, seen = services.message_create_many, []

    def recording(requests, **options):
        outcomes = real(requests, **options)
        seen.append((threading.get_ident(), default_connection.connection))  # open once it has written
        return outcomes

    monkeypatch.setattr(services, "message_create_many", recording)
    backend, closed = type(connections["default"]), []
    real_close = backend.close
    monkeypatch.setattr(backend, "close", lambda self: closed.append(self.connection) or real_close(self))
    the_writer = writer.MessageWriter()

    await the_writer.create(room=room, user=alice, content="one")
    await the_writer.create(room=room, user=alice, content="two")
    assert seen[0][0] == seen[1][0] and seen[0][1] is seen[1][1]  # same thread, same open connection
    assert closed == []

    monkeypatch.setattr(backend, "is_usable", lambda self: False)
    await the_writer.create(room=room, user=alice, content="three")
    assert seen[2][0] == seen[0][0]  # the same thread, on another connection: the broken one was let go
    assert closed == [seen[0][1]]
    if default_connection.vendor == "sqlite":  # PostgreSQL's pool may hand the same one back, checked
        assert seen[2][1] is not seen[0][1]


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
async def test_the_next_batch_is_stored_while_the_previous_one_is_broadcast_and_broadcasts_keep_commit_order(
    monkeypatch,
):
    room, alice = await room_and_alice("pipelined")
    real_write, real_publish = services.message_create_many, events.apublish_messages
    log, first_broadcast_held, release, second_stored = [], asyncio.Event(), asyncio.Event(), threading.Event()

    def recording_write(requests, **options):
        outcomes = real_write(requests, **options)
        log.append(("stored", [r.content for r in requests]))
        if len(log) == 3:
            second_stored.set()
        return outcomes

    async def held_publish(messages):
        contents = [m.content for m in messages]
        log.append(("broadcast", contents))
        if contents == ["one"]:  # the first batch's broadcast waits until the test releases it
            first_broadcast_held.set()
            await release.wait()
        reached = await real_publish(messages)
        log.append(("broadcast done", contents))
        return reached

    monkeypatch.setattr(services, "message_create_many", recording_write)
    monkeypatch.setattr(events, "apublish_messages", held_publish)
    the_writer = writer.MessageWriter()

    first = asyncio.create_task(the_writer.create(room=room, user=alice, content="one"))
    await asyncio.wait_for(first_broadcast_held.wait(), 10)
    second = asyncio.create_task(the_writer.create(room=room, user=alice, content="two"))
    # The writer's thread stores "two" while "one" is still being broadcast ...
    assert await sync_to_async(second_stored.wait, thread_sensitive=False)(10)
    await asyncio.sleep(0.05)  # ... and "two" is not broadcast before "one" is done
    assert log == [("stored", ["one"]), ("broadcast", ["one"]), ("stored", ["two"])]
    assert not first.done() and not second.done()  # a send is answered only once broadcast

    release.set()
    results = await asyncio.gather(first, second)

    assert log[3:] == [("broadcast done", ["one"]), ("broadcast", ["two"]), ("broadcast done", ["two"])]
    assert [(r.created, r.published, r.message.seq) for r in results] == [(True, True, 1), (True, True, 2)]


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
async def test_a_cancelled_broadcast_answers_its_senders_and_the_next_batches_go_on(monkeypatch):
    room, alice = await room_and_alice("cancelled")
    real_publish, calls = events.apublish_messages, []

    async def cancelled_once(messages):
        calls.append([m.content for m in messages])
        if len(calls) == 1:
            raise asyncio.CancelledError
        return await real_publish(messages)

    monkeypatch.setattr(events, "apublish_messages", cancelled_once)
    the_writer = writer.MessageWriter()

    first = await asyncio.wait_for(the_writer.create(room=room, user=alice, content="one"), 10)
    second = await asyncio.wait_for(the_writer.create(room=room, user=alice, content="two"), 10)

    assert [(r.created, r.published, r.message.seq) for r in (first, second)] == [(True, False, 1), (True, True, 2)]
    assert calls == [["one"], ["two"]]


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
async def test_a_failed_broadcast_still_answers_the_sender_with_its_stored_message(monkeypatch, caplog):
    room, alice = await room_and_alice("unheard")

    async def failing_publish(messages):
        raise RuntimeError("layer gone")

    monkeypatch.setattr(events, "apublish_messages", failing_publish)

    result = await writer.MessageWriter().create(room=room, user=alice, content="kept", client_id="k1")

    assert (result.created, result.published, result.message.seq) == (True, False, 1)
    assert await sync_to_async(Message.objects.filter(room=room, client_id="k1").count)() == 1
    assert "broadcast of 1 stored messages failed" in caplog.text


@pytest.mark.django_db
def test_a_send_to_a_room_deleted_meanwhile_is_refused_alone(general):
    gone = RoomFactory(name="gone")
    alice = UserFactory(username="alice")
    requests = [
        MessageRequest(room=general, user=alice, content="kept", client_id="k1"),
        MessageRequest(room=gone, user=alice, content="lost", client_id="k2"),
    ]
    Room.objects.filter(pk=gone.pk).delete()  # the socket still holds the Room it joined

    outcomes = message_create_many(requests)

    assert (outcomes[0].created, outcomes[0].message.seq) == (True, 1)
    assert isinstance(outcomes[1], Room.DoesNotExist)
    assert list(Message.objects.values_list("content", flat=True)) == ["kept"]


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
async def test_the_writers_thread_goes_on_to_the_next_batch_while_the_event_loop_is_busy(monkeypatch):
    room, alice = await room_and_alice("busy-loop")
    real = services.message_create_many
    first_started, release_first, second_stored = threading.Event(), threading.Event(), threading.Event()

    def recording(requests, **options):
        contents = [r.content for r in requests]
        if contents == ["one"]:
            first_started.set()
            release_first.wait(10)
        outcomes = real(requests, **options)
        if contents == ["two"]:
            second_stored.set()
        return outcomes

    monkeypatch.setattr(services, "message_create_many", recording)
    the_writer = writer.MessageWriter()
    first = asyncio.create_task(the_writer.create(room=room, user=alice, content="one"))
    await sync_to_async(first_started.wait, thread_sensitive=False)(10)
    second = asyncio.create_task(the_writer.create(room=room, user=alice, content="two"))
    await asyncio.sleep(0)  # "two" is queued

    release_first.set()
    stored_while_the_loop_was_blocked = second_stored.wait(10)  # blocks the event loop itself

    assert stored_while_the_loop_was_blocked
    results = await asyncio.gather(first, second)
    assert [(r.created, r.message.seq, r.message.content) for r in results] == [(True, 1, "one"), (True, 2, "two")]


def waiting_for_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        return cursor.fetchone()[0] > 0


@on_postgresql
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_on_postgresql_a_ban_committed_while_a_batch_waits_for_its_room_refuses_its_message():
    # A batch waiting for its room's lock (another node's batch holds it) must see a ban that
    # committed meanwhile: no message of a banned user stored after the ban. (A mute needs no such
    # care: its foreign keys are checked at its commit, which waits for the batch holding the room.)
    from accounts.services import user_set_active

    room, ann = RoomFactory(name="waited"), UserFactory(username="ann")
    held, release, outcomes = threading.Event(), threading.Event(), []

    def another_batch() -> None:
        try:
            with transaction.atomic():
                Room.objects.select_for_update().get(pk=room.pk)
                held.set()
                release.wait(10)
        finally:
            connection.close()

    def send() -> None:
        try:
            outcomes.extend(message_create_many([MessageRequest(room=room, user=ann, content="just in time")]))
        finally:
            connection.close()

    holder, sender = threading.Thread(target=another_batch), threading.Thread(target=send)
    holder.start()
    assert held.wait(10)
    sender.start()
    deadline = time.monotonic() + 10
    while not waiting_for_a_lock() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert waiting_for_a_lock()  # the batch waits for the room
    user_set_active(user=ann, active=False)
    release.set()
    holder.join(10), sender.join(10)

    assert [type(outcome) for outcome in outcomes] == [services.PosterDeactivated]
    assert not Message.objects.filter(room=room).exists()


@on_postgresql
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@pytest.mark.parametrize("action", ["unmute", "delete"])
def test_on_postgresql_a_moderators_unmute_or_delete_beside_a_batch_holding_the_room_does_not_deadlock(
    action, monkeypatch
):
    # The batch holds its rooms and then share-locks its senders; a moderator's action that locked a
    # sender and then waited for one of those rooms made a deadlock (one of the two failed after 1 s).
    lower, room, other = RoomFactory(name="lower"), RoomFactory(name="held"), RoomFactory(name="other")
    ann, bob = UserFactory(username="ann"), UserFactory(username="bob")
    mute = services.mute_create(user=ann, room=room, until=timezone.now() + timedelta(hours=1))
    spam = [make_message(room=lower, user=ann, content="spam"), make_message(room=room, user=bob, content="more")]
    rooms_locked, go_on, outcomes, failures = threading.Event(), threading.Event(), [], []
    rows = services.sql.rows

    def pausing_after_the_room_lock(text, *args, **kwargs):
        result = rows(text, *args, **kwargs)
        if text.endswith("FOR UPDATE") and threading.current_thread().name == "batch":
            rooms_locked.set()
            go_on.wait(10)
        return result

    monkeypatch.setattr(services.sql, "rows", pausing_after_the_room_lock)

    def run(name, call) -> threading.Thread:
        def target():
            try:
                outcomes.append((name, call()))
            except Exception as exc:  # a deadlock's victim
                failures.append((name, repr(exc)))
            finally:
                connection.close()

        thread = threading.Thread(target=target, name=name)
        thread.start()
        return thread

    batch = [MessageRequest(room=room, user=bob, content="b"), MessageRequest(room=other, user=ann, content="a")]
    batch_thread = run("batch", lambda: [type(o).__name__ for o in message_create_many(batch, publish=False)])
    assert rooms_locked.wait(10)
    if action == "unmute":
        moderator = run("moderator", lambda: services.mute_delete(mutes=[mute]))
    else:
        moderator = run("moderator", lambda: services.message_delete(messages=spam))
    moderator.join(3)  # it finishes, or waits for a lock the batch holds
    go_on.set()
    batch_thread.join(15), moderator.join(15)

    assert failures == []
    assert sorted(outcomes) == [
        ("batch", ["MessageResult", "MessageResult"]),
        ("moderator", 1 if action == "unmute" else 2),
    ]
