"""The operators' manage.py commands of issue 7, through call_command (exit codes: tests/test_operations.py)."""

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from asgiref.sync import sync_to_async
from django.core.management import CommandError, call_command
from django.utils import timezone

from accounts.models import User
from chat import services
from chat.events import message_payload
from chat.management.commands import list_rooms
from chat.models import AuditEntry, Message, Mute, Room
from chat.presence import presence
from chat.tests.factories import RoomFactory, make_message
from chat.tests.test_consumers import CLOSE_DEACTIVATED, Text, enter, receive

pytestmark = pytest.mark.django_db


def run(*args, **options) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO(), **options)
    return out.getvalue()


def age(message: Message, days: float) -> Message:
    Message.objects.filter(pk=message.pk).update(created=timezone.now() - timedelta(days=days))
    message.refresh_from_db()
    return message


# --- create_moderator, create_room, list_rooms ----------------------------------------------


def test_create_moderator_adds_the_user_to_the_group_and_makes_them_staff(user):
    assert run("create_moderator", "ALICE") == "alice is a moderator.\n"
    user.refresh_from_db()
    assert user.is_staff is True
    assert list(user.groups.values_list("name", flat=True)) == ["Moderators"]


def test_create_moderator_of_an_unknown_user_is_an_error():
    with pytest.raises(CommandError, match="Unknown user 'nobody'"):
        run("create_moderator", "nobody")


def test_create_room_with_a_title():
    assert run("create_room", "lobby", "--title", "The lobby") == "Created room lobby.\n"
    room = Room.objects.get(name="lobby")
    assert room.title == "The lobby"
    assert list(AuditEntry.objects.values_list("actor", "action", "target_repr")) == [(None, "room_create", "lobby")]


@pytest.mark.parametrize(
    ("name", "error"), [("general", "already exists"), ("GENERAL", "already exists"), ("a b", "name")]
)
def test_create_room_refuses_a_duplicate_or_a_bad_name(name, error):
    with pytest.raises(CommandError, match=error):
        run("create_room", name)
    assert Room.objects.filter(name=name).count() == (1 if name == "general" else 0)


def test_list_rooms_is_an_aligned_table(user):
    Room.objects.exclude(name="general").delete()
    RoomFactory(name="a-longer-name", title="T")
    message = make_message(room=Room.objects.get(name="general"), user=user)

    lines = run("list_rooms").splitlines()

    assert lines == [
        "NAME           TITLE    ONLINE  MESSAGES  LAST ACTIVITY",
        "a-longer-name  T        -       0         -",
        f"general        General  -       1         {message.created.isoformat(timespec='seconds')}",
    ]


async def test_list_rooms_shows_online_as_unknown_with_in_process_presence(general):
    # The command runs in a process of its own: in-process presence there never holds the server's
    # sockets, so a count read from it would be a wrong 0. Even one it does hold is not shown.
    await presence.connect(room_id=general.pk, room_name="general", user_id=1, username="alice", channel="c1")

    lines = (await sync_to_async(run)("list_rooms")).splitlines()

    assert lines[0].split()[:3] == ["NAME", "TITLE", "ONLINE"]
    assert {tuple(line.split()[:3]) for line in lines[1:]} >= {("general", "General", "-")}
    assert {line.split()[2] for line in lines[1:]} == {"-"}


class SharedPresence:
    """Presence every process shares (Redis): its counts are the server's."""

    shared = True

    def online_counts(self, room_ids: list[int]) -> dict[int, int]:
        return dict.fromkeys(room_ids, 3)


def test_list_rooms_shows_the_online_count_of_shared_presence(general, monkeypatch):
    monkeypatch.setattr(list_rooms, "presence", SharedPresence())

    lines = run("list_rooms").splitlines()

    assert lines[0].split()[:3] == ["NAME", "TITLE", "ONLINE"]
    assert {line.split()[2] for line in lines[1:]} == {"3"}


# --- export_messages ------------------------------------------------------------------------


@pytest.fixture
def three(general, user) -> list[Message]:
    messages = [make_message(room=general, user=user, content=f'm{i}, "quoted"\nline') for i in range(3)]
    age(messages[0], 3)
    return messages


def test_export_writes_one_api_message_object_per_line_oldest_first(three):
    for m in three:
        m.refresh_from_db()
    lines = run("export_messages", "general").splitlines()
    assert [json.loads(line) for line in lines] == [message_payload(m) for m in three]


def test_export_since_a_date_or_datetime(three):
    yesterday = (timezone.now() - timedelta(days=1)).astimezone(UTC)
    by_date = run("export_messages", "general", "--since", yesterday.date().isoformat())
    by_time = run("export_messages", "general", "--since", yesterday.isoformat())
    assert [json.loads(line)["seq"] for line in by_date.splitlines()] == [2, 3]
    assert [json.loads(line)["seq"] for line in by_time.splitlines()] == [2, 3]


def test_export_csv_to_a_file(three, tmp_path):
    target = tmp_path / "out.csv"
    assert run("export_messages", "general", "--format", "csv", "--output", str(target)) == ""
    rows = list(csv.reader(target.open(newline="", encoding="utf-8")))
    assert rows[0] == ["id", "seq", "room", "user_id", "username", "content", "timestamp", "client_id"]
    assert [r[1] for r in rows[1:]] == ["1", "2", "3"]
    assert rows[1][5] == 'm0, "quoted"\nline'


def test_export_streams_with_an_iterator(three, monkeypatch):
    from django.db.models.query import QuerySet

    seen = {}
    original = QuerySet.iterator

    def spy(self, chunk_size=None):
        seen["chunk_size"] = chunk_size
        return original(self, chunk_size=chunk_size)

    monkeypatch.setattr(QuerySet, "iterator", spy)
    assert len(run("export_messages", "general").splitlines()) == 3
    assert seen == {"chunk_size": 2000}


def test_export_progress_bar_only_on_a_terminal(three):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    terminal, pipe = Tty(), io.StringIO()
    call_command("export_messages", "general", stdout=io.StringIO(), stderr=terminal)
    call_command("export_messages", "general", stdout=io.StringIO(), stderr=pipe)
    assert "3/3" in terminal.getvalue()
    assert pipe.getvalue() == ""


def test_export_counts_the_room_only_for_a_progress_bar(three):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    class Tty(io.StringIO):
        def isatty(self):
            return True

    def counts(stderr) -> int:
        with CaptureQueriesContext(connection) as queries:
            call_command("export_messages", "general", stdout=io.StringIO(), stderr=stderr)
        return sum("COUNT(" in q["sql"].upper() for q in queries.captured_queries)

    assert (counts(Tty()), counts(io.StringIO())) == (1, 0)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["nowhere"], "Unknown room 'nowhere'"),
        (["general", "--since", "yesterday"], "--since"),
        (["general", "--since", "2024-02-30T10:00"], "--since must be a date"),
        (["general", "--since", "2024-02-30"], "--since must be a date"),
        (["general", "--since", "2024-13-01T25:00"], "--since must be a date"),
        (["general", "--since", "0001-01-01T00:00+05:00"], "outside the years 1 to 9999"),
        (["general", "--since", "9999-12-31T23:59-05:00"], "outside the years 1 to 9999"),
        (["general", "--output", "/nonexistent/dir/x.jsonl"], "Cannot write"),
    ],
)
def test_export_errors(args, error):
    with pytest.raises(CommandError, match=error):
        run("export_messages", *args)


# --- purge_messages -------------------------------------------------------------------------


def test_purge_dry_run_prints_and_keeps(three):
    out = run("purge_messages", "--older-than", "2", "--dry-run")
    assert out.splitlines() == [
        f"would delete general#1 by alice at {Message.objects.get(seq=1).created.isoformat()}",
        "Would delete 1 message(s).",
    ]
    assert Message.objects.count() == 3


def test_purge_deletes_older_messages_of_one_room(three, user):
    python = Room.objects.get(name="python")
    age(make_message(room=python, user=user), 5)
    out = run("purge_messages", "--older-than", "2", "--room", "general")
    assert out.splitlines()[-1] == "Deleted 1 message(s)."
    assert sorted(Message.objects.values_list("room__name", "seq")) == [("general", 2), ("general", 3), ("python", 1)]
    # One entry for the purge, none per message: a retention purge keeps none of the text it removes.
    [entry] = AuditEntry.objects.all()
    assert (entry.actor, entry.action, entry.target_type, entry.target_repr) == (
        None,
        "purge_messages",
        "room",
        "general",
    )
    cutoff = datetime.fromisoformat(entry.detail.pop("before"))
    assert abs(cutoff - (timezone.now() - timedelta(days=2))) < timedelta(minutes=1)
    assert entry.detail == {"room": "general", "deleted": 1}
    run("purge_messages", "--older-than", "2")
    assert list(
        AuditEntry.objects.order_by("id").values_list("action", "target_type", "detail__room", "detail__deleted")
    ) == [
        ("purge_messages", "room", "general", 1),
        ("purge_messages", "", None, 1),
    ]


def test_a_purge_that_fails_part_way_records_what_it_deleted(user, general, monkeypatch):
    for n in range(3):
        age(make_message(room=general, user=user, content=f"old {n}"), 5)
    monkeypatch.setattr(services, "DELETE_CHUNK", 1)
    chunks = []

    def second_chunk_fails(ids, actor, record, delete=services._delete_chunk):
        chunks.append(ids)
        if len(chunks) == 2:
            raise RuntimeError("the database went away")
        return delete(ids, actor, record)

    monkeypatch.setattr(services, "_delete_chunk", second_chunk_fails)

    with pytest.raises(RuntimeError):
        run("purge_messages", "--older-than", "1")

    assert Message.objects.count() == 2
    assert list(AuditEntry.objects.values_list("action", "detail__deleted")) == [("purge_messages", 1)]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--older-than", "-1"], "0 or more"),
        (["--older-than", "1", "--room", "x"], "Unknown room"),
        (["--older-than", "800000"], "before the year 1"),
        (["--older-than", str(10**12)], "before the year 1"),
    ],
)
def test_purge_errors(args, error):
    with pytest.raises(CommandError, match=error):
        run("purge_messages", *args)


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
async def test_purge_tells_open_sockets_like_a_moderator_delete(sockets, alice, bob):
    general = await sync_to_async(Room.objects.get)(name="general")
    old = await sync_to_async(lambda: age(make_message(room=general, user=alice), 1))()
    socket = await enter(sockets, bob)

    await sync_to_async(run)("purge_messages", "--older-than", "0")

    assert await receive(socket) == {"type": "message_deleted", "room": "general", "id": old.pk, "seq": 1}


# --- ban_user, mute_user ---------------------------------------------------------------------


def test_ban_user_twice_or_unban_twice_changes_and_records_once(user):
    assert [run("ban_user", user.username) for _ in range(2)] == [
        f"Banned {user.username}.\n",
        f"{user.username} is already banned; nothing changed.\n",
    ]
    assert [run("ban_user", user.username, "--unban") for _ in range(2)] == [
        f"Unbanned {user.username}.\n",
        f"{user.username} is not banned; nothing changed.\n",
    ]
    assert list(AuditEntry.objects.order_by("id").values_list("action", flat=True)) == ["ban", "unban"]


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
async def test_ban_user_closes_sockets_4003_and_unban_reactivates(sockets, alice):
    socket = await enter(sockets, alice)
    assert await sync_to_async(run)("ban_user", "alice") == "Banned alice.\n"
    assert await socket.receive_output() == CLOSE_DEACTIVATED
    assert await sync_to_async(run)("ban_user", "alice", "--unban") == "Unbanned alice.\n"
    assert (await sync_to_async(User.objects.get)(pk=alice.pk)).is_active is True


def test_ban_unknown_user_is_an_error():
    with pytest.raises(CommandError, match="Unknown user"):
        run("ban_user", "nobody")


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
async def test_mute_user_for_minutes(sockets, alice):
    socket = await enter(sockets, alice)
    before = timezone.now()
    await sync_to_async(run)("mute_user", "alice", "general", "--minutes", "10")
    mute = await sync_to_async(Mute.objects.get)()
    assert before + timedelta(minutes=10) <= mute.until <= timezone.now() + timedelta(minutes=10)
    await socket.send_to(text_data="hi")
    event = await receive(socket)
    assert event == {"type": "error", "code": "muted", "detail": Text(), "until": mute.until.isoformat()}


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["nobody", "general", "--minutes", "1"], "Unknown user"),
        (["alice", "nowhere", "--minutes", "1"], "Unknown room"),
        (["alice", "general", "--minutes", "0"], "at least 1"),
        (["alice", "general", "--minutes", str(5_000_000_000)], "after the year 9999"),
        (["alice", "general", "--minutes", str(10**20)], "after the year 9999"),
    ],
)
def test_mute_user_errors(user, args, error):
    with pytest.raises(CommandError, match=error):
        run("mute_user", *args)


# --- chat_stats -----------------------------------------------------------------------------


def test_chat_stats_totals_and_messages_per_day(three):
    lines = run("chat_stats").splitlines()
    today = timezone.now().astimezone(UTC).date()
    three_days_ago = (today - timedelta(days=3)).isoformat()
    assert lines[:4] == ["users     1", f"rooms     {Room.objects.count()}", "messages  3", ""]
    assert lines[4] == "DAY         MESSAGES"
    days = dict(line.split() for line in lines[5:])
    assert len(days) == 14
    assert days[today.isoformat()] == "2"
    assert days[three_days_ago] == "1"
    assert sum(int(n) for n in days.values()) == 3


def test_chat_stats_plot_draws_a_png(three, tmp_path):
    pytest.importorskip("matplotlib")
    target = tmp_path / "stats.png"
    out = run("chat_stats", "--plot", str(target))
    assert out.splitlines()[-1] == f"Wrote {target}."
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_chat_stats_plot_to_an_unwritable_path_is_an_error(three):
    pytest.importorskip("matplotlib")
    with pytest.raises(CommandError, match="Cannot write"):
        run("chat_stats", "--plot", "/nonexistent/dir/stats.png")


def test_chat_stats_plot_without_matplotlib_is_an_error(three, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(CommandError, match="needs matplotlib"):
        run("chat_stats", "--plot", "x.png")


def test_every_command_has_help():
    for name in (
        "create_moderator",
        "create_room",
        "list_rooms",
        "export_messages",
        "purge_messages",
        "ban_user",
        "mute_user",
        "chat_stats",
    ):
        from django.core.management import load_command_class

        app = "accounts" if name in ("create_moderator", "ban_user") else "chat"
        assert load_command_class(app, name).help.strip()
