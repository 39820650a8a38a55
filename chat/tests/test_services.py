"""chat.services.message_create: seq allocation, client_id idempotency, validation and publish-after-commit."""

import asyncio
import json
import threading
from datetime import UTC, timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import User
from accounts.tests.factories import UserFactory
from chat import services
from chat.events import apublish_messages, encode, message_event, room_group
from chat.models import AuditEntry, Message, Mute, Room
from chat.services import MessageRejected, message_create
from chat.tests.factories import RoomFactory
from chat.text import is_blank
from chatproject.ratelimit import RateLimited

WRITERS = 24
MESSAGES_PER_WRITER = 5


def message_json(message: Message) -> dict:
    return {
        "id": message.pk,
        "seq": message.seq,
        "room": message.room.name,
        "user": {"id": message.user.pk, "username": message.user.username},
        "content": message.content,
        "timestamp": message.created.isoformat(),
        "client_id": message.client_id,
    }


# --- seq allocation -------------------------------------------------------------------------


@pytest.mark.django_db
def test_message_create_stores_the_message_with_seq_1_first(general, user):
    result = message_create(room=general, user=user, content="hello", client_id="c1")

    assert result.created is True
    stored = Message.objects.get()
    assert stored == result.message
    assert (stored.room, stored.user, stored.content, stored.client_id, stored.seq) == (
        general,
        user,
        "hello",
        "c1",
        1,
    )
    assert stored.created.utcoffset() == timedelta(0)
    general.refresh_from_db()
    assert general.last_seq == 1


@pytest.mark.django_db
def test_message_create_numbers_each_room_separately(general, user):
    python = Room.objects.get(name="python")

    seqs = [
        (room.name, message_create(room=room, user=user, content="x").message.seq)
        for room in [general, general, python, general, python]
    ]

    assert seqs == [("general", 1), ("general", 2), ("python", 1), ("general", 3), ("python", 2)]
    assert list(Room.objects.filter(name__in=["general", "python"]).values_list("name", "last_seq")) == [
        ("general", 3),
        ("python", 2),
    ]


@pytest.mark.django_db
def test_message_create_reads_the_counter_from_the_database_not_the_instance(general, user):
    stale = Room.objects.get(pk=general.pk)
    message_create(room=general, user=user, content="one")
    message_create(room=general, user=user, content="two")

    assert message_create(room=stale, user=user, content="three").message.seq == 3


# --- client_id idempotency ------------------------------------------------------------------


@pytest.mark.django_db
def test_message_create_same_client_id_returns_the_original_and_uses_no_seq(general, user):
    original = message_create(room=general, user=user, content="hello", client_id="abc").message

    again = message_create(room=general, user=user, content="different", client_id="abc")

    assert (again.created, again.message.pk, again.message.content) == (False, original.pk, "hello")
    assert Message.objects.count() == 1
    assert message_create(room=general, user=user, content="next").message.seq == 2


@pytest.mark.django_db
def test_message_create_client_id_is_scoped_to_user_and_room(general, user):
    bob = UserFactory(username="bob")
    python = Room.objects.get(name="python")
    message_create(room=general, user=user, content="a", client_id="abc")

    by_bob = message_create(room=general, user=bob, content="b", client_id="abc")
    elsewhere = message_create(room=python, user=user, content="c", client_id="abc")

    assert (by_bob.created, by_bob.message.seq) == (True, 2)
    assert (elsewhere.created, elsewhere.message.seq) == (True, 1)


@pytest.mark.django_db
def test_message_create_without_client_id_never_deduplicates(general, user):
    first = message_create(room=general, user=user, content="same")
    second = message_create(room=general, user=user, content="same")

    assert (first.created, second.created) == (True, True)
    assert (first.message.seq, second.message.seq) == (1, 2)


def repeats_missed(monkeypatch, times: int) -> list:
    """The batch's lookup of repeated client_ids misses `times` times, as when a writer in another
    process stores the same client_id while the batch waits for the room's lock."""
    real, calls = services._stored_repeats, []

    def missing(keys, rows):
        calls.append(keys)
        return {} if len(calls) <= times else real(keys, rows)

    monkeypatch.setattr(services, "_stored_repeats", missing)
    return calls


@pytest.mark.django_db
@pytest.mark.parametrize("misses", [1, 2])
def test_message_create_losing_the_client_id_race_returns_the_winner(general, user, monkeypatch, misses):
    # The constraint fires and the batch rolls back; once more it finds the winner (or, missed
    # again, the request alone looks it up).
    winner = message_create(room=general, user=user, content="winner", client_id="abc").message
    calls = repeats_missed(monkeypatch, misses)

    result = message_create(room=general, user=user, content="loser", client_id="abc")

    assert (result.created, result.message.pk, result.message.content) == (False, winner.pk, "winner")
    assert len(calls) == misses + 1
    assert Message.objects.count() == 1
    general.refresh_from_db()
    assert general.last_seq == 1


@pytest.mark.django_db
def test_a_batch_that_lost_a_client_id_race_is_stored_again_counting_sends_once(general, user, monkeypatch, settings):
    settings.CHAT_MESSAGE_RATE = "2/min"
    bob = UserFactory(username="bob")
    winner = message_create(room=general, user=user, content="winner", client_id="abc").message
    calls = repeats_missed(monkeypatch, 1)
    requests = [
        services.MessageRequest(room=general, user=user, content="loser", client_id="abc"),
        services.MessageRequest(room=general, user=bob, content="bob 1"),
    ]

    outcomes = services.message_create_many(requests)
    assert len(calls) == 2  # the batch was stored twice; bob's first send counted once
    after = message_create(room=general, user=bob, content="bob 2")  # bob's second of two: allowed

    assert [(o.created, o.message.content, o.message.seq) for o in outcomes] == [
        (False, "winner", winner.seq),
        (True, "bob 1", 2),
    ]
    assert (after.created, after.message.seq) == (True, 3)
    with pytest.raises(RateLimited):
        message_create(room=general, user=bob, content="bob 3")


# --- validation -----------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("content", "client_id", "code", "field", "detail"),
    [
        (42, None, "bad_request", "content", "content must be a string."),
        (None, None, "bad_request", "content", "content must be a string."),
        (["hi"], None, "bad_request", "content", "content must be a string."),
        (b"hi", None, "bad_request", "content", "content must be a string."),
        ("", None, "empty", "content", "Message is empty."),
        (" \n\t ", None, "empty", "content", "Message is empty."),
        ("x" * 11, None, "too_long", "content", "Message is longer than 10 characters."),
        ("a\x00b", None, "bad_request", "content", "content contains characters that cannot be stored."),
        ("a\ud800b", None, "bad_request", "content", "content contains characters that cannot be stored."),
        ("hi", "", "bad_request", "client_id", "client_id must be a string of 1 to 64 characters."),
        ("hi", "x" * 65, "bad_request", "client_id", "client_id must be a string of 1 to 64 characters."),
        ("hi", 7, "bad_request", "client_id", "client_id must be a string of 1 to 64 characters."),
        ("hi", "\ud800", "bad_request", "client_id", "client_id must be a string of 1 to 64 characters."),
    ],
)
def test_message_create_rejects_with_code_and_field(general, user, settings, content, client_id, code, field, detail):
    settings.CHAT_MAX_MESSAGE_LENGTH = 10

    with pytest.raises(MessageRejected) as excinfo:
        message_create(room=general, user=user, content=content, client_id=client_id)

    assert (excinfo.value.code, excinfo.value.field, excinfo.value.detail) == (code, field, detail)
    assert not Message.objects.exists()
    general.refresh_from_db()
    assert general.last_seq == 0


@pytest.mark.django_db
def test_message_create_accepts_content_at_the_limit_and_64_char_client_id(general, user, settings):
    settings.CHAT_MAX_MESSAGE_LENGTH = 10

    result = message_create(room=general, user=user, content="ü" * 10, client_id="c" * 64)

    assert (result.created, result.message.content, result.message.client_id) == (True, "ü" * 10, "c" * 64)


# --- publish after commit -------------------------------------------------------------------


def recording_into(published: list):
    """Stands in for services.publish_messages: records what would be broadcast."""

    def publish(messages):
        published.extend(messages)
        return [True] * len(messages)

    return publish


@pytest.mark.django_db
def test_message_create_publishes_only_when_the_transaction_commits(
    general, user, monkeypatch, django_capture_on_commit_callbacks
):
    published = []
    monkeypatch.setattr(services, "publish_messages", recording_into(published))

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        result = message_create(room=general, user=user, content="hello", client_id="abc")
        assert published == []

    assert len(callbacks) == 1
    assert published == [result.message]


@pytest.mark.django_db
def test_message_create_publishes_nothing_for_a_repeat_or_a_rejection(
    general, user, monkeypatch, django_capture_on_commit_callbacks
):
    message_create(room=general, user=user, content="hello", client_id="abc")
    published = []
    monkeypatch.setattr(services, "publish_messages", recording_into(published))

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        message_create(room=general, user=user, content="hello", client_id="abc")
        with pytest.raises(MessageRejected):
            message_create(room=general, user=user, content=" ")

    assert (callbacks, published) == ([], [])


def _receive(channel: str, timeout: float):
    """The next message on the channel, or None when none arrives in time."""

    async def receive():
        try:
            return await asyncio.wait_for(get_channel_layer().receive(channel), timeout)
        except TimeoutError:
            return None

    return async_to_sync(receive)()


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_commit_is_published_as_one_layer_message_per_room_in_seq_order(user, monkeypatch):
    first_room, second_room = RoomFactory(name="first"), RoomFactory(name="second")
    monkeypatch.setattr(services, "publish_messages", lambda messages: [True] * len(messages))
    a1, b1, a2 = (
        message_create(room=room, user=user, content=content).message
        for room, content in ((first_room, "a1"), (second_room, "b1"), (first_room, "a2"))
    )
    layer = get_channel_layer()
    channels = {room.pk: async_to_sync(layer.new_channel)() for room in (first_room, second_room)}
    for room_id, channel in channels.items():
        async_to_sync(layer.group_add)(room_group(room_id), channel)

    assert async_to_sync(apublish_messages)([a2, b1, a1]) == [True, True, True]

    def event_text(message):
        return encode(message_event(message))

    assert _receive(channels[first_room.pk], timeout=5) == {
        "type": "chat.messages",
        "group": room_group(first_room.pk),
        "messages": [[1, event_text(a1)], [2, event_text(a2)]],
    }
    assert _receive(channels[second_room.pk], timeout=5) == {
        "type": "chat.message",
        "group": room_group(second_room.pk),
        "seq": 1,
        "text": event_text(b1),
    }
    assert _receive(channels[first_room.pk], timeout=0.3) is None
    for room_id, channel in channels.items():
        async_to_sync(layer.group_discard)(room_group(room_id), channel)


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_room_group_receives_the_event_only_after_commit(user):
    room = RoomFactory(name="live")
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(room_group(room.pk), channel)

    with transaction.atomic():
        message = message_create(room=room, user=user, content="hello", client_id="abc").message
        assert _receive(channel, timeout=0.3) is None

    event = _receive(channel, timeout=5)
    assert event is not None
    assert {**event, "text": json.loads(event["text"])} == {
        "type": "chat.message",
        "group": room_group(room.pk),
        "seq": 1,
        "text": {"type": "message", **message_json(message)},
    }
    async_to_sync(layer.group_discard)(room_group(room.pk), channel)


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_rolled_back_message_is_never_published_and_uses_no_seq(user, monkeypatch):
    room = RoomFactory(name="rollback")
    published = []
    monkeypatch.setattr(services, "publish_messages", recording_into(published))

    with pytest.raises(RuntimeError), transaction.atomic():
        message_create(room=room, user=user, content="hello")
        raise RuntimeError("the caller's transaction fails")

    assert published == []
    assert not Message.objects.exists()
    assert message_create(room=room, user=user, content="again").message.seq == 1


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_published_message_is_already_visible_to_other_connections(user, monkeypatch):
    room = RoomFactory(name="visible")
    seen = []

    def publish(messages):
        def look():
            try:
                seen.extend(Message.objects.filter(pk=m.pk).exists() for m in messages)
            finally:
                connection.close()

        reader = threading.Thread(target=look)
        reader.start()
        reader.join()
        return [True] * len(messages)

    monkeypatch.setattr(services, "publish_messages", publish)

    message_create(room=room, user=user, content="hello")

    assert seen == [True]


# --- concurrency ----------------------------------------------------------------------------


def _run_concurrently(targets) -> list[BaseException]:
    """Start every target at the same moment, each thread on its own connection; return their errors."""
    barrier = threading.Barrier(len(targets))
    errors: list[BaseException] = []

    def run(target):
        try:
            barrier.wait(timeout=30)
            target()
        except BaseException as exc:  # collected and asserted on by the test
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(t,)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a writer is stuck"
    return errors


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_concurrent_writers_to_one_room_get_gapless_unique_seqs():
    room = RoomFactory(name="busy")
    users = [UserFactory() for _ in range(WRITERS)]
    seqs_by_writer: dict[int, list[int]] = {}

    def writer(user):
        def write():
            seqs_by_writer[user.pk] = [
                message_create(room=room, user=user, content=f"{user.username} #{n}").message.seq
                for n in range(MESSAGES_PER_WRITER)
            ]

        return write

    errors = _run_concurrently([writer(u) for u in users])

    assert errors == []
    total = WRITERS * MESSAGES_PER_WRITER
    stored = list(Message.objects.filter(room=room).order_by("seq").values_list("seq", "created"))
    assert [seq for seq, _ in stored] == list(range(1, total + 1))
    assert sorted(seq for seqs in seqs_by_writer.values() for seq in seqs) == list(range(1, total + 1))
    assert all(seqs == sorted(seqs) for seqs in seqs_by_writer.values())
    # seq is allocated and `created` stamped under the same lock, so they agree on the order.
    created = [created for _, created in stored]
    assert created == sorted(created)
    room.refresh_from_db()
    assert room.last_seq == total


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_concurrent_writers_to_several_rooms_keep_each_room_gapless():
    rooms = [RoomFactory(name=f"room-{n}") for n in range(3)]
    users = [UserFactory() for _ in range(WRITERS)]

    def writer(user, room):
        def write():
            for n in range(MESSAGES_PER_WRITER):
                message_create(room=room, user=user, content=f"#{n}")

        return write

    errors = _run_concurrently([writer(u, rooms[i % 3]) for i, u in enumerate(users)])

    assert errors == []
    for room in rooms:
        count = Message.objects.filter(room=room).count()
        assert count == (WRITERS // 3) * MESSAGES_PER_WRITER
        assert list(Message.objects.filter(room=room).order_by("seq").values_list("seq", flat=True)) == list(
            range(1, count + 1)
        )


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_concurrent_posts_with_the_same_client_id_store_one_message():
    room = RoomFactory(name="retry")
    user = UserFactory()
    results = []

    def post():
        results.append(message_create(room=room, user=user, content="hello", client_id="same"))

    errors = _run_concurrently([post] * 12)

    assert errors == []
    assert Message.objects.filter(room=room).count() == 1
    stored = Message.objects.get(room=room)
    assert sorted(r.created for r in results) == [False] * 11 + [True]
    assert {r.message.pk for r in results} == {stored.pk}
    room.refresh_from_db()
    assert (stored.seq, room.last_seq) == (1, 1)


# --- the constraints message_create relies on -----------------------------------------------


@pytest.mark.django_db
def test_database_refuses_a_second_message_with_the_same_room_seq(general, user):
    Message.objects.create(room=general, user=user, content="a", seq=1)

    with pytest.raises(IntegrityError), transaction.atomic():
        Message.objects.create(room=general, user=user, content="b", seq=1)


@pytest.mark.django_db
def test_database_refuses_a_second_message_with_the_same_user_room_client_id(general, user):
    Message.objects.create(room=general, user=user, content="a", seq=1, client_id="abc")

    with pytest.raises(IntegrityError), transaction.atomic():
        Message.objects.create(room=general, user=user, content="b", seq=2, client_id="abc")


@pytest.mark.django_db
def test_database_allows_many_messages_without_client_id(general, user):
    Message.objects.create(room=general, user=user, content="a", seq=1)
    Message.objects.create(room=general, user=user, content="b", seq=2)

    assert Message.objects.filter(client_id__isnull=True).count() == 2


# --- moderation: message_delete, mutes, archived rooms (issue 7) ----------------------------


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_message_delete_announces_each_message_after_commit_and_seq_is_not_reused(user):
    room = RoomFactory(name="moderated")
    first, second = (message_create(room=room, user=user, content=c).message for c in ("a", "b"))
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(room_group(room.pk), channel)

    with transaction.atomic():
        assert services.message_delete(messages=[second], actor=None) == 1
        assert _receive(channel, timeout=0.3) is None

    event = _receive(channel, timeout=5)
    assert {**event, "texts": [json.loads(text) for text in event["texts"]]} == {
        "type": "chat.deletions",
        "group": room_group(room.pk),
        "texts": [{"type": "message_deleted", "room": "moderated", "id": second.pk, "seq": 2}],
    }
    assert message_create(room=room, user=user, content="c").message.seq == 3
    assert list(Message.objects.filter(room=room).values_list("seq", flat=True)) == [1, 3]
    async_to_sync(layer.group_discard)(room_group(room.pk), channel)


@pytest.mark.django_db
def test_message_delete_of_an_already_deleted_message_announces_nothing(
    general, user, monkeypatch, django_capture_on_commit_callbacks
):
    message = message_create(room=general, user=user, content="once").message
    announced = []
    monkeypatch.setattr(services, "publish_messages_deleted", lambda gone: announced.append([m.pk for m in gone]))
    with django_capture_on_commit_callbacks(execute=True):
        assert services.message_delete(messages=[message]) == 1
        assert services.message_delete(messages=[message]) == 0
    assert announced == [[message.pk]]


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_many_deleted_messages_go_in_chunks_each_committed_and_announced_per_room_in_seq_order(user, monkeypatch):
    monkeypatch.setattr(services, "DELETE_CHUNK", 3)
    one, two = RoomFactory(name="one"), RoomFactory(name="two")
    for n in range(4):
        for room in (one, two):
            message_create(room=room, user=user, content=f"{room.name} {n}")
    keep = Message.objects.get(room=one, seq=4)
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    for room in (one, two):
        async_to_sync(layer.group_add)(room_group(room.pk), channel)
    commits = []
    monkeypatch.setattr(
        services,
        "publish_messages_deleted",
        lambda gone, publish=services.publish_messages_deleted: (
            commits.append(Message.objects.count()),
            publish(gone),
        ),
    )

    assert services.message_delete(messages=Message.objects.exclude(pk=keep.pk).order_by("-pk")) == 7

    assert commits == [5, 2, 1]  # each chunk committed before it was announced, the next one after
    seen = {}
    for _ in range(5):  # chunks of ids 1-3, 4-6, 7: one event per room in each
        event = _receive(channel, timeout=5)
        for text in event["texts"]:
            gone = json.loads(text)
            seen.setdefault(gone["room"], []).append(gone["seq"])
    assert seen == {"one": [1, 2, 3], "two": [1, 2, 3, 4]}
    assert list(Message.objects.values_list("room__name", "seq")) == [("one", 4)]
    assert AuditEntry.objects.filter(action="message_delete").count() == 7
    for room in (one, two):
        async_to_sync(layer.group_discard)(room_group(room.pk), channel)


@pytest.mark.django_db
def test_a_muted_user_is_refused_with_the_end_time_until_the_mute_ends(general, user):
    until = timezone.now() + timedelta(minutes=5)
    services.mute_create(user=user, room=general, until=until)

    with pytest.raises(services.MessageForbidden) as refused:
        message_create(room=general, user=user, content="hi")

    assert (refused.value.code, refused.value.extra) == ("muted", {"until": until.astimezone(UTC).isoformat()})
    Mute.objects.update(until=timezone.now() - timedelta(seconds=1))
    assert message_create(room=general, user=user, content="hi").created is True


@pytest.mark.django_db
@pytest.mark.parametrize(
    "end_account",
    [
        pytest.param(lambda users: users.update(is_active=False), id="banned"),
        pytest.param(lambda users: users.delete(), id="deleted"),  # its row would fail the batch's insert
    ],
)
def test_a_sender_banned_or_deleted_since_their_token_was_accepted_is_refused_and_the_others_stored(
    general, user, end_account
):
    other_user = UserFactory()
    end_account(User.objects.filter(pk=user.pk))  # `user` is the socket's copy, still in memory

    outcomes = services.message_create_many(
        [
            services.MessageRequest(room=general, user=user, content="not stored"),
            services.MessageRequest(room=general, user=other_user, content="fine"),
        ]
    )

    assert isinstance(outcomes[0], services.PosterDeactivated)
    assert outcomes[1].message.seq == 1
    assert list(Message.objects.values_list("content", "seq")) == [("fine", 1)]


@pytest.mark.django_db
def test_archiving_through_a_stale_instance_reads_the_room_as_stored_and_records_once(general):
    # Two moderators with the same list page open: each holds the room as it was when the page loaded.
    first, second = Room.objects.get(pk=general.pk), Room.objects.get(pk=general.pk)

    assert (services.room_archive(room=first), services.room_archive(room=second)) == (True, False)
    assert second.archived_at == first.archived_at
    assert (services.room_unarchive(room=first), services.room_unarchive(room=second)) == (True, False)
    assert second.archived_at is None
    assert list(AuditEntry.objects.values_list("action", flat=True).order_by("id")) == [
        "room_archive",
        "room_unarchive",
    ]
    gone = Room.objects.get(pk=general.pk)
    Room.objects.filter(pk=general.pk).delete()
    assert (services.room_archive(room=gone), services.room_unarchive(room=gone)) == (False, False)


@pytest.mark.django_db
def test_ban_and_archive_lock_the_row_they_read(general):
    from accounts.services import user_ban

    user = UserFactory()
    with CaptureQueriesContext(connection) as queries:
        user_ban(user=user)
        services.room_archive(room=general)
    reads = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("SELECT")]
    locked = [sql for sql in reads if sql.rstrip().endswith("FOR UPDATE")]
    # SQLite has no row locks (its IMMEDIATE transactions take the write lock at BEGIN).
    assert len(locked) == (2 if connection.features.has_select_for_update else 0)


@pytest.mark.django_db
def test_banning_through_a_stale_instance_reads_the_user_as_stored_and_records_once():
    from accounts.services import user_ban, user_unban

    user = UserFactory()
    first, second = User.objects.get(pk=user.pk), User.objects.get(pk=user.pk)

    assert (user_ban(user=first), user_ban(user=second)) == (True, False)
    assert second.is_active is False
    assert (user_unban(user=first), user_unban(user=second)) == (True, False)
    assert second.is_active is True
    assert list(AuditEntry.objects.values_list("action", flat=True).order_by("id")) == ["ban", "unban"]
    gone = User.objects.get(pk=user.pk)
    User.objects.filter(pk=user.pk).delete()
    assert (user_ban(user=gone), user_unban(user=gone)) == (False, False)


@pytest.mark.django_db
def test_an_archived_room_refuses_messages_until_unarchived(general, user):
    services.room_archive(room=general)
    with pytest.raises(services.MessageForbidden) as refused:
        message_create(room=general, user=user, content="hi")
    assert refused.value.code == "archived"
    assert Message.objects.count() == 0

    services.room_unarchive(room=general)
    assert message_create(room=general, user=user, content="hi").message.seq == 1
    assert list(AuditEntry.objects.values_list("action", flat=True).order_by("id")) == [
        "room_archive",
        "room_unarchive",
    ]


@pytest.mark.parametrize(
    ("text", "blank"),
    [
        ("", True),
        (" \t\n", True),
        ("\u200b\u200c\u200d\u2060\ufeff", True),  # zero-width characters
        ("\u200e\u200f\u061c", True),  # direction marks
        ("\u3164\u115f\u1160\uffa0\u2800", True),  # the Hangul fillers, the blank Braille pattern
        ("\ufe0f\U000e0100\u034f", True),  # variation selectors, the combining grapheme joiner alone
        ("\U000e0041\U000e0042", True),  # tag characters
        ("\u06dd", False),  # the end of ayah: a format character that is drawn
        ("\u0600", False),  # the Arabic number sign
        ("\u200ba", False),
        ("\U0001f468\u200d\U0001f469\u200d\U0001f467", False),  # an emoji family joined by ZWJs
    ],
)
def test_a_text_is_blank_when_it_would_show_nothing(text, blank):
    assert is_blank(text) is blank
