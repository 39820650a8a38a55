"""chat.selectors: the history page in plain SQL gives what the ORM gives, on every database."""

from datetime import UTC, datetime

import pytest
from django.db.backends.postgresql.psycopg_any import BaseTzLoader
from psycopg.pq import Format

from accounts.tests.factories import UserFactory, field_values
from chat import selectors, sql
from chat.models import Message, Room
from chat.tests.databases import on_postgresql
from chat.tests.factories import RoomFactory, make_message

pytestmark = pytest.mark.django_db


def orm_page(room, *, limit=50, skip=0, before=None, after=None) -> list[dict]:
    qs = Message.objects.filter(room=room)
    if before is not None:
        qs = qs.filter(seq__lt=before)
    qs = qs.filter(seq__gt=after).order_by("seq") if after is not None else qs.order_by("-seq")
    return list(qs.values(*selectors.MESSAGE_ROW_FIELDS)[skip : skip + limit])


@pytest.mark.parametrize(
    "query",
    [{}, {"limit": 3}, {"limit": 2, "skip": 4}, {"before": 5}, {"before": 5, "limit": 2}, {"after": 6}, {"after": 0}],
)
def test_a_page_is_the_rows_the_orm_reads(query):
    room, other = RoomFactory(), RoomFactory()
    alice, bob = UserFactory(), UserFactory()
    for n in range(8):
        make_message(room=room, user=(alice, bob)[n % 2], content=f"m{n}", client_id=f"c{n}" if n % 3 else None)
        make_message(room=other, user=alice, content=f"elsewhere {n}")

    page = selectors.message_list(room=room, **query)

    assert page == orm_page(room, **query)
    assert page  # every query above has rows
    assert page[0]["created"].tzinfo is not None  # an aware datetime, not SQLite's text


@pytest.mark.parametrize("archived_at", [None, datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)])
def test_a_room_by_name_is_the_instance_the_orm_builds(archived_at):
    RoomFactory(name="before")
    room = RoomFactory(name="wanted", title="Wanted — ünïcode")
    Room.objects.filter(pk=room.pk).update(last_seq=41, archived_at=archived_at)
    RoomFactory(name="after")

    found = selectors.room_get(name="wanted")

    assert field_values(found) == field_values(Room.objects.get(name="wanted"))
    assert (found.last_seq, found.archived_at, found.created_at.tzinfo is not None) == (41, archived_at, True)
    assert (found._state.adding, found._state.db) == (False, "default")  # as loaded: a save() updates it


def test_an_unknown_room_name_finds_nothing():
    RoomFactory(name="general-two")

    assert (selectors.room_get(name="general-tw"), selectors.room_get(name="GENERAL-TWO")) == (None, None)


@pytest.mark.parametrize("name", ["", "general-two\x00", "\x00", "général", "a" * 51, "general two"])
def test_a_name_no_room_can_have_finds_nothing_without_asking_the_database(name, django_assert_num_queries):
    RoomFactory(name="general-two")

    with django_assert_num_queries(0):
        assert selectors.room_get(name=name) is None


def test_a_rooms_last_seq_is_read_from_its_row():
    room, other = RoomFactory(), RoomFactory()
    for n in range(3):
        make_message(room=room, content=f"m{n}")

    assert [selectors.room_last_seq(room_id=r.pk) for r in (room, other)] == [3, 0]
    assert selectors.room_last_seq(room_id=other.pk + room.pk + 1000) == 0


def test_an_empty_room_has_an_empty_page():
    assert selectors.message_list(room=RoomFactory()) == []


@on_postgresql
def test_on_postgresql_a_page_reads_timestamps_with_psycopgs_loader_to_the_orms_values(monkeypatch):
    room, alice = RoomFactory(), UserFactory()
    for n in range(4):
        make_message(room=room, user=alice, content=f"m{n}")
    # isoformat() leaves out a zero microsecond: a payload shows it as the ORM's value does
    Message.objects.filter(room=room, seq=2).update(created=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    loaders = []

    def loaded_in_c(found):
        timestamps_loaded_in_c(found)
        adapters = found.cursor.adapters
        loaders.append(adapters.get_loader(adapters.types["timestamptz"].oid, Format.TEXT))

    timestamps_loaded_in_c = sql._timestamps_loaded_in_c
    monkeypatch.setattr(sql, "_timestamps_loaded_in_c", loaded_in_c)

    page = selectors.message_list(room=room)

    assert page == orm_page(room)
    assert [row["created"].tzinfo for row in page] == [UTC] * 4
    assert [row["created"].isoformat() for row in page] == [row["created"].isoformat() for row in orm_page(room)]
    assert len(loaders) == 1 and not issubclass(loaders[0], BaseTzLoader)  # psycopg's, not Django's
