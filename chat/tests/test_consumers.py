"""The room WebSocket of issue 3, driven through the real chatproject.asgi.application."""

import asyncio
import base64
import gc
import json
import logging
import time
import weakref
from collections import deque
from datetime import datetime, timedelta
from urllib.parse import urlencode

import jwt
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.db import transaction
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from accounts.models import User
from accounts.services import user_set_active
from chat import events, services, writer
from chat.consumers import RoomConsumer
from chat.frames import text_frame
from chat.hub import hub
from chat.models import Message, Room
from chat.ordering import SeqOrderer
from chat.tests.communicator import PATIENCE
from chat.tests.factories import make_message
from chat.tests.wire import parse_frame

# The consumer reaches the database from a worker thread, so tests need real commits; the
# serialized rollback brings back the rooms the data migration creates.
pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

CLOSE_UNAUTHENTICATED = {"type": "websocket.close", "code": 4001}
CLOSE_DEACTIVATED = {"type": "websocket.close", "code": 4003}
CLOSE_UNKNOWN_ROOM = {"type": "websocket.close", "code": 4004}
CLOSE_FRAME_TOO_LARGE = {"type": "websocket.close", "code": 4009}
GAP_FILL_TIMEOUT = 3  # the consumer waits GAP_WAIT_SECONDS (0.5 s) before reading a hole from the database


# --- matchers -----------------------------------------------------------------------------


class IsoUtc:
    """Equal to an ISO-8601 string with a UTC offset (and, if given, naming exactly `instant`)."""

    def __init__(self, instant: datetime | None = None) -> None:
        self.instant = instant

    def __eq__(self, other) -> bool:
        try:
            parsed = datetime.fromisoformat(other)
        except (TypeError, ValueError):
            return False
        if parsed.utcoffset() != timedelta(0):
            return False
        return self.instant is None or parsed == self.instant

    def __repr__(self) -> str:
        return f"<ISO-8601 UTC {self.instant or 'timestamp'}>"


class Text:
    """Equal to any non-empty string (error details are for humans; the contract fixes the code)."""

    def __eq__(self, other) -> bool:
        return isinstance(other, str) and bool(other.strip())

    def __repr__(self) -> str:
        return "<non-empty text>"


# --- expected events ------------------------------------------------------------------------


def user_json(user) -> dict:
    return {"id": user.pk, "username": user.username}


def message_json(message: Message) -> dict:
    """The message object of issue 2, written out field by field."""
    return {
        "id": message.pk,
        "seq": message.seq,
        "room": message.room.name,
        "user": user_json(message.user),
        "content": message.content,
        "timestamp": IsoUtc(message.created),
        "client_id": message.client_id,
    }


def message_event(message: Message) -> dict:
    return {"type": "message", **message_json(message)}


def member_event(kind: str, user, room: str = "general") -> dict:
    return {"type": kind, "room": room, "user": user_json(user), "timestamp": IsoUtc()}


def presence_event(*users, room: str = "general") -> dict:
    return {"type": "presence", "room": room, "users": sorted((user_json(u) for u in users), key=lambda u: u["id"])}


def typing_event(user, room: str = "general") -> dict:
    return {"type": "typing", "room": room, "user": user_json(user)}


def error_event(code: str, client_id: str | None = None) -> dict:
    event = {"type": "error", "code": code, "detail": Text()}
    if client_id is not None:
        event["client_id"] = client_id
    return event


def with_sorted_users(event: dict) -> dict:
    """Presence lists users in no promised order."""
    if event.get("type") == "presence":
        return {**event, "users": sorted(event["users"], key=lambda u: u["id"])}
    return event


# --- tokens and database -------------------------------------------------------------------


def access_token(user, lifetime: timedelta | None = None) -> str:
    token = AccessToken.for_user(user)
    if lifetime is not None:
        token.set_exp(lifetime=lifetime)
    return str(token)


def ws_path(room: str = "general", *, token: str | None = None, since=None) -> str:
    params = {}
    if token is not None:
        params["token"] = token
    if since is not None:
        params["since"] = since
    return f"/ws/{room}" + (f"?{urlencode(params)}" if params else "")


@sync_to_async
def stored(room: str = "general") -> list[Message]:
    return list(Message.objects.filter(room__name=room).select_related("room", "user").order_by("seq"))


@sync_to_async
def create_message(**kwargs) -> Message:
    return make_message(**kwargs)


@sync_to_async
def get_message(**lookup) -> Message:
    return Message.objects.select_related("room", "user").get(**lookup)


async def rest(user, method: str, path: str, body: dict | None = None):
    client = APIClient()
    if user is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {access_token(user)}")
    return await sync_to_async(getattr(client, method))(path, body, format="json")


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_unhandled_errors(caplog):
    """Nothing a client does may leave an error or a traceback in the log."""
    yield
    errors = [r for r in caplog.get_records("call") if r.levelno >= logging.ERROR or r.exc_info]
    assert [r.getMessage() for r in errors] == []


@pytest.fixture
def general(transactional_db):
    return Room.objects.get(name="general")


async def connect(sockets, user, room: str = "general", **query) -> WebsocketCommunicator:
    communicator = sockets(ws_path(room, token=access_token(user), **query))
    connected, _ = await communicator.connect()
    assert connected is True
    return communicator


async def enter(sockets, user, room: str = "general", *, first: bool = True) -> WebsocketCommunicator:
    """Connect, read the presence event and, for the user's first socket in the room, its own join."""
    communicator = await connect(sockets, user, room)
    event = await communicator.receive_json_from()
    assert event["type"] == "presence"
    if first:
        assert await communicator.receive_json_from() == member_event("join", user, room)
    return communicator


async def receive(communicator: WebsocketCommunicator, timeout: float = PATIENCE) -> dict:
    return with_sorted_users(await communicator.receive_json_from(timeout=timeout))


async def receive_all(communicator: WebsocketCommunicator, count: int, timeout: float = PATIENCE) -> list[dict]:
    return [await receive(communicator, timeout) for _ in range(count)]


async def silent(*communicators: WebsocketCommunicator, timeout: float = 0.2) -> bool:
    """True when none of the sockets has anything to say."""
    results = [await c.receive_nothing(timeout=timeout) for c in communicators]
    return all(results)


# --- refused connections ------------------------------------------------------------------


def _tampered(alice, bob) -> str:
    """Alice's token with its payload rewritten to name Bob, signature kept."""
    header, _, signature = access_token(alice).split(".")
    payload = jwt.decode(access_token(bob), options={"verify_signature": False})
    body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    return f"{header}.{body}.{signature}"


def _wrong_key(alice, bob) -> str:
    payload = jwt.decode(access_token(alice), options={"verify_signature": False})
    return jwt.encode(payload, "not-the-server-key-" * 3, algorithm="HS256")


def _alg_none(alice, bob) -> str:
    payload = jwt.decode(access_token(alice), options={"verify_signature": False})
    return jwt.encode(payload, None, algorithm="none")


def _inactive(alice, bob) -> str:
    alice.is_active = False
    alice.save(update_fields=["is_active"])
    return access_token(alice)


def _deleted(alice, bob) -> str:
    token = access_token(alice)
    alice.delete()
    return token


REFUSED_TOKENS = [
    pytest.param(lambda alice, bob: None, id="missing"),
    pytest.param(lambda alice, bob: "", id="empty"),
    pytest.param(lambda alice, bob: "not-a-jwt", id="malformed"),
    pytest.param(lambda alice, bob: "a.b.c", id="malformed-segments"),
    pytest.param(_tampered, id="tampered"),
    pytest.param(_wrong_key, id="wrong-key"),
    pytest.param(_alg_none, id="alg-none"),
    pytest.param(lambda alice, bob: access_token(alice, lifetime=-timedelta(seconds=5)), id="expired"),
    pytest.param(lambda alice, bob: str(RefreshToken.for_user(alice)), id="refresh-token"),
    pytest.param(_inactive, id="inactive-user"),
    pytest.param(_deleted, id="deleted-user"),
]


async def test_a_message_committed_right_after_presence_is_delivered(sockets, alice, bob, general, monkeypatch):
    # The client holds its presence event and may send at once (or a peer answers it): such a
    # message must not count as older than the socket. Here it is committed the moment presence
    # has gone out, before the consumer does anything else.
    from chat.consumers import RoomConsumer

    committed = []
    send_event = RoomConsumer.send_event

    async def send_then_commit(self, event):
        await send_event(self, event)
        if event["type"] == "presence" and not committed:
            committed.append(await create_message(room=general, user=bob, content="right after presence"))

    monkeypatch.setattr(RoomConsumer, "send_event", send_then_commit)
    communicator = await connect(sockets, alice)

    assert (await receive(communicator))["type"] == "presence"
    events = await receive_all(communicator, 2)  # the message and alice's own join, in either order
    assert message_event(committed[0]) in events and member_event("join", alice) in events


@pytest.mark.parametrize("make_token", REFUSED_TOKENS)
async def test_refused_token_is_accepted_then_closed_4001_with_no_event(sockets, alice, bob, make_token):
    listener = await enter(sockets, bob)
    token = await sync_to_async(make_token)(alice, bob)
    communicator = sockets(ws_path(token=token))

    connected, _ = await communicator.connect()

    assert connected is True  # accepted first, so that a browser can read the close code
    assert await communicator.receive_output() == CLOSE_UNAUTHENTICATED
    assert await silent(communicator, listener)
    response = await rest(None, "get", "/rooms")
    assert [room["online"] for room in response.json()["rooms"] if room["name"] == "general"] == [1]


@pytest.mark.parametrize("room", ["no-such-room", "%00", "general%00", "caf%C3%A9", "a" * 51])
async def test_unknown_room_is_accepted_then_closed_4004_with_no_event(sockets, alice, bob, room):
    listener = await enter(sockets, bob)
    communicator = sockets(ws_path(room, token=access_token(alice)))

    connected, _ = await communicator.connect()

    assert connected is True
    assert await communicator.receive_output() == CLOSE_UNKNOWN_ROOM
    assert await silent(communicator, listener)


@pytest.mark.parametrize("path", ["/ws/", "/ws/general/extra", "/wss/general", "/"])
async def test_a_path_outside_ws_room_is_accepted_then_closed_4004(sockets, alice, path):
    communicator = sockets(f"{path}?token={access_token(alice)}")

    connected, _ = await communicator.connect()

    assert connected is True
    assert await communicator.receive_output() == CLOSE_UNKNOWN_ROOM


@pytest.mark.parametrize(
    ("path", "close"),
    [
        pytest.param("/ws/general?token=not-a-jwt", CLOSE_UNAUTHENTICATED, id="4001"),
        pytest.param("/ws/no-such-room?token={token}", CLOSE_UNKNOWN_ROOM, id="4004"),
    ],
)
@pytest.mark.parametrize(
    "frame",
    [
        pytest.param('{"type": "typing"}', id="typing"),
        pytest.param('{"type": "message", "content": "hi", "client_id": "c-1"}', id="message"),
        pytest.param("plain text", id="plain-text"),
    ],
)
async def test_a_frame_racing_a_refusal_close_is_ignored_not_crashing(sockets, alice, path, close, frame):
    """A client that sends as soon as the socket opens may be heard before the close reaches it."""
    communicator = sockets(path.format(token=access_token(alice)))
    assert (await communicator.connect())[0] is True
    assert await communicator.receive_output() == close

    await communicator.send_to(text_data=frame)

    assert await silent(communicator)
    assert await stored() == []
    await communicator.disconnect()  # re-raises if the consumer crashed


# --- closes while connected --------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param({"text_data": "a" * (64 * 1024 + 1)}, id="plain-text"),
        pytest.param({"text_data": json.dumps({"type": "message", "content": "b" * (64 * 1024)})}, id="json-message"),
        # 21846 three-byte characters: fewer than 64 Ki characters but more than 64 KiB.
        pytest.param({"text_data": "€" * 21846}, id="multibyte-text"),
        pytest.param({"bytes_data": b"\x00" * (64 * 1024 + 1)}, id="binary"),
    ],
)
async def test_frame_over_64_kib_closes_4009_and_stores_nothing(sockets, alice, bob, frame):
    sender = await enter(sockets, alice)
    listener = await enter(sockets, bob)
    assert await sender.receive_json_from() == member_event("join", bob)

    await sender.send_to(**frame)

    assert await sender.receive_output() == CLOSE_FRAME_TOO_LARGE
    assert await stored() == []
    assert await silent(sender, listener)


@pytest.mark.parametrize(
    ("failure", "logged_by_the_socket"),
    [(writer.DatabaseUnavailable("connection refused"), False), (RuntimeError("a bug"), True)],
    ids=["no-database", "crash"],
)
async def test_a_send_the_writer_could_not_store_is_refused_as_unavailable_and_the_socket_goes_on(
    sockets, alice, monkeypatch, caplog, failure, logged_by_the_socket
):
    communicator = await enter(sockets, alice)
    real = writer._write
    monkeypatch.setattr(writer, "_write", lambda requests: (_ for _ in ()).throw(failure))

    await communicator.send_json_to({"type": "message", "content": "lost", "client_id": "c-1"})

    assert await receive(communicator) == error_event("unavailable", "c-1")
    # No database: the writer logs the outage once; each refused message is not an ERROR of its own.
    assert [r.name for r in caplog.records if r.levelname == "ERROR"] == (
        ["chat.ws"] if logged_by_the_socket else ["chat.writer"]
    )
    monkeypatch.setattr(writer, "_write", real)
    monkeypatch.setattr(writer._Outage, "paused_until", 0.0)
    await communicator.send_json_to({"type": "message", "content": "kept", "client_id": "c-2"})
    assert await receive(communicator) == message_event(await get_message(content="kept"))
    caplog.clear()  # the errors above are the server's own, made on purpose: not a client's doing


async def test_frame_of_exactly_64_kib_is_not_closed(sockets, alice):
    communicator = await enter(sockets, alice)

    await communicator.send_to(text_data="a" * (64 * 1024))

    assert await receive(communicator) == error_event("too_long")
    await communicator.send_to(text_data="still here")
    assert await receive(communicator) == message_event(await get_message(content="still here"))


async def test_deactivation_closes_every_socket_of_the_user_4003_within_2s(sockets, alice, bob):
    first_tab = await enter(sockets, alice)
    second_tab = await enter(sockets, alice, first=False)
    other_room = await enter(sockets, alice, "python")
    bystander = await enter(sockets, bob)
    for tab in (first_tab, second_tab):
        assert await tab.receive_json_from() == member_event("join", bob)

    await sync_to_async(user_set_active)(user=alice, active=False)
    deactivated = time.monotonic()  # committed, and published on commit

    for communicator in (first_tab, second_tab, other_room):
        assert await communicator.receive_output() == CLOSE_DEACTIVATED
    assert time.monotonic() - deactivated <= 2.0  # the bound; typically a few milliseconds
    assert await silent(first_tab, second_tab, other_room, bystander)

    # The server then drops the connections; Bob sees Alice leave once and keeps chatting.
    for communicator in (first_tab, second_tab, other_room):
        await communicator.disconnect()
    assert await receive(bystander) == member_event("leave", alice)
    await bystander.send_to(text_data="still open")
    assert await receive(bystander) == message_event(await get_message(content="still open"))


def ban_without_broadcast(user) -> None:
    """The ban is committed but its broadcast reaches no socket (Redis down, a command on another layer)."""
    User.objects.filter(pk=user.pk).update(is_active=False)


def delete_user(user) -> None:
    """An account deleted (in the admin, at the shell): no broadcast at all."""
    User.objects.filter(pk=user.pk).delete()


@pytest.mark.parametrize("end_account", [ban_without_broadcast, delete_user])
async def test_a_banned_users_send_closes_their_socket_4003_and_stores_nothing_when_the_ban_was_not_heard(
    sockets, alice, bob, settings, end_account
):
    settings.CHAT_DEACTIVATION_CHECK_SECONDS = 60  # not the periodic check: the send itself
    banned = await enter(sockets, alice)
    bystander = await enter(sockets, bob)
    assert await receive(banned) == member_event("join", bob)
    await sync_to_async(end_account)(alice)

    await banned.send_to(text_data="still talking")

    assert await banned.receive_output() == CLOSE_DEACTIVATED
    assert await sync_to_async(Message.objects.count)() == 0
    assert await silent(bystander)


@pytest.mark.parametrize("end_account", [ban_without_broadcast, delete_user])
async def test_the_sockets_of_a_user_banned_unheard_close_4003_at_the_next_check(
    sockets, alice, bob, settings, end_account
):
    settings.CHAT_DEACTIVATION_CHECK_SECONDS = 0.2
    first_tab = await enter(sockets, alice)
    other_room = await enter(sockets, alice, "python")
    bystander = await enter(sockets, bob)
    assert await receive(first_tab) == member_event("join", bob)

    await sync_to_async(end_account)(alice)

    for communicator in (first_tab, other_room):
        assert await communicator.receive_output(timeout=3) == CLOSE_DEACTIVATED
    assert await silent(bystander)


async def test_a_socket_ended_by_an_error_still_leaves_its_room(sockets, alice, bob, monkeypatch):
    """Whatever ends a socket, its user does not stay online as a ghost (presence, joins, the
    per-user connection count): the leave goes out and the room's online count drops."""
    bystander = await enter(sockets, bob)
    crashing = await enter(sockets, alice)
    assert await receive(bystander) == member_event("join", alice)

    async def broken(self, text_data=None, bytes_data=None):
        raise RuntimeError("a bug in a handler")

    monkeypatch.setattr(RoomConsumer, "receive", broken)
    await crashing.send_to(text_data="anything")
    with pytest.raises(RuntimeError, match="a bug in a handler"):
        await crashing.receive_output()
    crashing.disconnected = True  # the application has ended: nothing left to disconnect at teardown

    assert await receive(bystander) == member_event("leave", alice)
    response = await rest(None, "get", "/rooms")
    assert {room["name"]: room["online"] for room in response.json()["rooms"]}["general"] == 1


async def test_deactivated_user_cannot_reconnect_with_an_unexpired_token(sockets, alice):
    token = access_token(alice)
    await sync_to_async(user_set_active)(user=alice, active=False)
    communicator = sockets(ws_path(token=token))

    assert (await communicator.connect())[0] is True
    assert await communicator.receive_output() == CLOSE_UNAUTHENTICATED


async def test_socket_closes_4001_within_5s_of_access_token_expiry(sockets, alice, bob):
    token = AccessToken.for_user(alice)
    token.set_exp(lifetime=timedelta(seconds=5))  # exp is whole seconds: 4-5 s to enter, even on a busy machine
    expires_at = float(token["exp"])
    communicator = sockets(ws_path(token=str(token)))
    assert (await communicator.connect())[0] is True
    assert await receive(communicator) == presence_event(alice)
    assert await receive(communicator) == member_event("join", alice)
    bystander = await enter(sockets, bob)
    assert await receive(communicator) == member_event("join", bob)

    close = await communicator.receive_output(timeout=expires_at + 5 - time.time())
    closed_at = time.time()

    assert close == CLOSE_UNAUTHENTICATED
    assert expires_at - 0.25 <= closed_at <= expires_at + 5
    assert await silent(bystander)  # Bob's token is still valid


async def test_a_closed_socket_is_freed_at_once_without_the_cycle_collector(sockets, alice, bob, general):
    # A closed socket left in a reference cycle waits for a full collection: after a large room
    # closes, thousands of consumers and their tasks stay in memory and make collections slower.
    communicator = await enter(sockets, alice)
    await enter(sockets, bob)
    assert await receive(communicator) == member_event("join", bob)
    consumer = next(c for c in hub()._groups[events.room_group(general.pk)] if c.user.pk == alice.pk)
    assert consumer.tasks  # the expiry timer: a task whose frame holds the consumer
    freed = weakref.ref(consumer)
    del consumer
    gc.disable()
    try:
        await communicator.disconnect()
        for _ in range(100):  # the cancelled timer runs once more, then nothing holds the consumer
            if freed() is None:
                break
            await asyncio.sleep(0.01)
        assert freed() is None
    finally:
        gc.enable()


# --- presence, join and leave -------------------------------------------------------------


async def test_presence_comes_first_and_lists_everyone_online_including_self(sockets, alice, bob, carol):
    await enter(sockets, bob)
    await enter(sockets, carol, "python")

    communicator = await connect(sockets, alice)

    assert await receive(communicator) == presence_event(alice, bob)
    assert await receive(communicator) == member_event("join", alice)


async def test_presence_lists_a_user_with_several_sockets_once(sockets, alice, bob):
    await enter(sockets, alice)
    await enter(sockets, bob)

    second_tab = await connect(sockets, alice)

    assert await receive(second_tab) == presence_event(alice, bob)
    assert await silent(second_tab)


async def test_join_only_on_first_socket_and_leave_only_on_last(sockets, alice, bob):
    bystander = await enter(sockets, bob)

    first_tab = await connect(sockets, alice)
    assert await receive_all(first_tab, 2) == [presence_event(alice, bob), member_event("join", alice)]
    assert await receive(bystander) == member_event("join", alice)

    second_tab = await connect(sockets, alice)
    assert await receive(second_tab) == presence_event(alice, bob)
    assert await silent(first_tab, second_tab, bystander)

    await first_tab.disconnect()
    assert await silent(second_tab, bystander)

    await second_tab.disconnect()
    assert await receive(bystander) == member_event("leave", alice)
    assert await silent(bystander)


async def test_join_and_leave_are_per_room(sockets, alice, bob, carol):
    in_general = await enter(sockets, bob)
    in_python = await enter(sockets, carol, "python")
    await enter(sockets, alice)
    assert await receive(in_general) == member_event("join", alice)

    python_tab = await connect(sockets, alice, "python")

    assert await receive_all(python_tab, 2) == [
        presence_event(alice, carol, room="python"),
        member_event("join", alice, "python"),
    ]
    assert await receive(in_python) == member_event("join", alice, "python")
    assert await silent(in_general)
    await python_tab.disconnect()
    assert await receive(in_python) == member_event("leave", alice, "python")
    assert await silent(in_general)


# --- typing -------------------------------------------------------------------------------


async def test_typing_reaches_the_others_but_not_the_typist_nor_their_other_tabs(sockets, alice, bob, carol):
    first_tab = await enter(sockets, alice)
    second_tab = await enter(sockets, alice, first=False)
    in_general = await enter(sockets, bob)
    elsewhere = await enter(sockets, carol, "python")
    for tab in (first_tab, second_tab):
        assert await receive(tab) == member_event("join", bob)

    await first_tab.send_json_to({"type": "typing"})

    assert await receive(in_general) == typing_event(alice)
    assert await silent(first_tab, second_tab, in_general, elsewhere)
    assert await stored() == []


async def test_a_burst_of_typing_frames_reaches_the_others_once_a_second(sockets, alice, bob):
    typist = await enter(sockets, alice)
    other = await enter(sockets, bob)
    assert await receive(typist) == member_event("join", bob)

    for _ in range(30):
        await typist.send_json_to({"type": "typing"})
    assert await receive(other) == typing_event(alice)
    assert await silent(other, typist)  # the other 29 dropped, and no error for them

    await asyncio.sleep(1.0)
    await typist.send_json_to({"type": "typing"})
    assert await receive(other) == typing_event(alice)
    await typist.send_json_to({"type": "message", "content": "done typing"})  # the socket is served as before
    assert (await receive(other))["content"] == "done typing"
    # The message cleared the others' notice: the next keystroke is news at once, then the limit again.
    await typist.send_json_to({"type": "typing"})
    await typist.send_json_to({"type": "typing"})
    assert await receive(other) == typing_event(alice)
    assert await silent(other)


# --- messages -----------------------------------------------------------------------------


async def test_message_reaches_everyone_in_the_room_including_the_sender(sockets, alice, bob, carol):
    sender = await enter(sockets, alice)
    second_tab = await enter(sockets, alice, first=False)
    listener = await enter(sockets, bob)
    elsewhere = await enter(sockets, carol, "python")
    for tab in (sender, second_tab):
        assert await receive(tab) == member_event("join", bob)

    await sender.send_json_to({"type": "message", "content": "hello", "client_id": "c-1"})

    echoed = await receive(sender)
    [message] = await stored()
    assert (message.user, message.content, message.client_id, message.seq) == (alice, "hello", "c-1", 1)
    expected = {
        "type": "message",
        "id": message.pk,
        "seq": 1,
        "room": "general",
        "user": {"id": alice.pk, "username": "alice"},
        "content": "hello",
        "timestamp": IsoUtc(message.created),
        "client_id": "c-1",
    }
    assert echoed == expected
    for communicator in (second_tab, listener):
        assert await receive(communicator) == expected
    assert await silent(sender, second_tab, listener, elsewhere)


async def test_message_event_carries_the_same_object_as_rest(sockets, alice):
    communicator = await enter(sockets, alice)
    await communicator.send_json_to({"type": "message", "content": "same everywhere"})
    event = await communicator.receive_json_from()

    history = await rest(alice, "get", "/messages/general")

    assert history.json() == [{key: value for key, value in event.items() if key != "type"}]


async def test_message_ignores_identity_fields_sent_by_the_client(sockets, alice, bob):
    communicator = await enter(sockets, alice)

    await communicator.send_json_to(
        {
            "type": "message",
            "content": "who am I",
            "user": {"id": bob.pk, "username": "bob"},
            "room": "python",
            "seq": 99,
            "id": 99,
            "timestamp": "2000-01-01T00:00:00+00:00",
        }
    )

    event = await receive(communicator)
    [message] = await stored()
    assert event == message_event(message)
    assert (message.user, message.room.name, message.seq) == (alice, "general", 1)


async def test_message_of_exactly_the_maximum_length_is_accepted(sockets, alice):
    communicator = await enter(sockets, alice)
    content = "x" * django_settings.CHAT_MAX_MESSAGE_LENGTH

    await communicator.send_json_to({"type": "message", "content": content})

    assert await receive(communicator) == message_event(await get_message(content=content))


@pytest.mark.parametrize(
    "frame",
    [
        "hello there",
        '["a", 1]',
        '"a json string"',
        "42",
        "null",
        "true",
        "{not json",
        "  padded  ",
        "[" * 1500 + "]" * 1500,  # an array too deep for the decoder is still not an object
    ],
)
async def test_a_text_frame_that_is_not_a_json_object_is_the_content_of_a_message(sockets, alice, bob, frame):
    sender = await enter(sockets, alice)
    listener = await enter(sockets, bob)
    assert await receive(sender) == member_event("join", bob)

    await sender.send_to(text_data=frame)

    event = await receive(sender)
    [message] = await stored()
    assert (message.user, message.content, message.client_id) == (alice, frame, None)
    assert event == message_event(message)
    assert await receive(listener) == message_event(message)


async def test_message_is_not_broadcast_when_its_transaction_rolls_back(sockets, alice, general):
    listener = await enter(sockets, alice)

    class Abort(Exception):
        pass

    def create_then_roll_back():
        with pytest.raises(Abort), transaction.atomic():
            make_message(room=general, user=alice, content="never committed")
            raise Abort

    await sync_to_async(create_then_roll_back)()

    assert await silent(listener, timeout=0.3)
    assert await stored() == []


# --- errors -------------------------------------------------------------------------------

ERROR_FRAMES = [
    pytest.param({"type": "nope"}, "bad_request", None, id="unknown-type"),
    pytest.param({"content": "hi"}, "bad_request", None, id="missing-type"),
    pytest.param({"type": None, "content": "hi"}, "bad_request", None, id="null-type"),
    pytest.param({"type": ["message"], "content": "hi"}, "bad_request", None, id="list-type"),
    pytest.param({"type": "Message", "content": "hi"}, "bad_request", None, id="type-is-case-sensitive"),
    pytest.param({"type": "message"}, "bad_request", None, id="missing-content"),
    pytest.param({"type": "message", "content": None}, "bad_request", None, id="null-content"),
    pytest.param({"type": "message", "content": 5}, "bad_request", None, id="int-content"),
    pytest.param({"type": "message", "content": True}, "bad_request", None, id="bool-content"),
    pytest.param({"type": "message", "content": ["hi"]}, "bad_request", None, id="list-content"),
    pytest.param({"type": "message", "content": {"text": "hi"}}, "bad_request", None, id="object-content"),
    pytest.param({"type": "message", "content": ""}, "empty", None, id="empty"),
    pytest.param({"type": "message", "content": " \n\t "}, "empty", None, id="whitespace"),
    pytest.param({"type": "message", "content": "\u200b\u2060\u200e"}, "empty", None, id="zero-width-only"),
    pytest.param({"type": "message", "content": "\u3164\u115f\U000e0100"}, "empty", None, id="blank-letters-only"),
    pytest.param({"type": "message", "content": "x" * 4001}, "too_long", None, id="too-long"),
    pytest.param({"type": "nope", "client_id": "c-1"}, "bad_request", "c-1", id="unknown-type-client-id"),
    pytest.param({"client_id": "c-2"}, "bad_request", "c-2", id="missing-type-client-id"),
    pytest.param({"type": "message", "client_id": "c-3"}, "bad_request", "c-3", id="missing-content-client-id"),
    pytest.param({"type": "message", "content": 7, "client_id": "c-4"}, "bad_request", "c-4", id="int-client-id"),
    pytest.param({"type": "message", "content": "  ", "client_id": "c-5"}, "empty", "c-5", id="empty-client-id"),
    pytest.param(
        {"type": "message", "content": "x" * 4001, "client_id": "c-6"}, "too_long", "c-6", id="too-long-client-id"
    ),
]


@pytest.mark.parametrize(("frame", "code", "client_id"), ERROR_FRAMES)
async def test_bad_frame_gets_an_error_stores_nothing_and_the_socket_stays_open(
    sockets, alice, bob, frame, code, client_id
):
    sender = await enter(sockets, alice)
    listener = await enter(sockets, bob)
    assert await receive(sender) == member_event("join", bob)

    await sender.send_json_to(frame)

    assert await receive(sender) == error_event(code, client_id)
    assert await silent(sender, listener)
    assert await stored() == []
    await sender.send_json_to({"type": "message", "content": "after the error"})
    event = await receive(sender)
    [message] = await stored()
    assert event == message_event(message)
    assert await receive(listener) == message_event(message)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("   ", "empty"),
        ("\n\t", "empty"),
        ("y" * 4001, "too_long"),
        # JSON objects the decoder cannot take: refused, not stored as the text of a message
        ('{"type": "typing", "x": ' + "[" * 1500 + "]" * 1500 + "}", "bad_request"),
        (' \n {"type": "message", "content": "hello", "x": ' + "[" * 1500 + "]" * 1500 + "}", "bad_request"),
        ('{"type": "message", "content": "hello", "n": ' + "9" * 4400 + "}", "bad_request"),
    ],
    ids=["spaces", "newline-tab", "too-long", "deep-typing", "deep-message-after-whitespace", "long-number"],
)
async def test_bad_plain_text_frame_gets_an_error(sockets, alice, text, code):
    communicator = await enter(sockets, alice)

    await communicator.send_to(text_data=text)

    assert await receive(communicator) == error_event(code)
    assert await stored() == []
    await communicator.send_to(text_data="fine")
    assert await receive(communicator) == message_event(await get_message(content="fine"))


async def test_empty_text_frame_is_an_empty_message(sockets, alice):
    communicator = await enter(sockets, alice)

    await communicator.send_input({"type": "websocket.receive", "text": ""})

    assert await receive(communicator) == error_event("empty")
    assert await stored() == []


@pytest.mark.parametrize("payload", [b'{"type": "message", "content": "hi"}', b"\xff\xfe", b"plain"])
async def test_binary_frame_is_bad_request_and_the_socket_stays_open(sockets, alice, bob, payload):
    sender = await enter(sockets, alice)
    listener = await enter(sockets, bob)
    assert await receive(sender) == member_event("join", bob)

    await sender.send_to(bytes_data=payload)

    assert await receive(sender) == error_event("bad_request")
    assert await silent(sender, listener)
    assert await stored() == []
    await sender.send_to(text_data="after binary")
    assert await receive(sender) == message_event(await get_message(content="after binary"))


async def test_nothing_a_client_sends_crashes_the_consumer(sockets, alice):
    """Hostile frames get errors or messages, never a 1011 close or a logged traceback."""
    communicator = await enter(sockets, alice)
    frames = [
        ('{"type": "message", "content": "nul \\u0000 inside"}', "bad_request"),
        ('{"type": "message", "content": "lone \\ud800 surrogate"}', "bad_request"),
        ('{"type": "message", "content": "hi", "client_id": 5}', "bad_request"),
        ('{"type": "message", "content": "hi", "client_id": ["c"]}', "bad_request"),
        ('{"type": "message", "content": "hi", "client_id": ""}', "bad_request"),
        ('{"type": "message", "content": "hi", "client_id": "' + "c" * 65 + '"}', "bad_request"),
        ('{"type": "message", "content": "hi", "client_id": "nul\\u0000"}', "bad_request"),
        ('{"type": {"nested": 1}}', "bad_request"),
        ('{"type": "typing", "user": {"id": 1}, "room": "python"}', None),
        ("[" * 60000, "too_long"),  # nested too deep for the JSON parser: plain text, too long
        ('{"type": "message", "content": "' + "\\ud83d" * 10 + '"}', "bad_request"),
        ("NaN", "message"),
        ('{"a": 1, "a": {"type": "message"}}', "bad_request"),
    ]
    for frame, outcome in frames:
        await communicator.send_to(text_data=frame)
        if outcome is None:
            continue
        event = await receive(communicator)
        assert event["type"] == ("message" if outcome == "message" else "error"), frame
        if outcome != "message":
            assert event["code"] == outcome, frame

    await communicator.send_to(text_data="alive")
    assert await receive(communicator) == message_event(await get_message(content="alive"))
    assert await silent(communicator)
    assert [m.content for m in await stored()] == ["NaN", "alive"]


# --- client_id idempotency -----------------------------------------------------------------


async def test_repeated_client_id_acknowledges_the_sender_alone_with_the_original(sockets, alice, bob):
    sender = await enter(sockets, alice)
    second_tab = await enter(sockets, alice, first=False)
    listener = await enter(sockets, bob)
    for tab in (sender, second_tab):
        assert await receive(tab) == member_event("join", bob)
    await sender.send_json_to({"type": "message", "content": "first", "client_id": "c-1"})
    echoed = await receive(sender)
    [original] = await stored()
    assert echoed == message_event(original)
    for communicator in (second_tab, listener):
        assert await receive(communicator) == message_event(original)

    await sender.send_json_to({"type": "message", "content": "second", "client_id": "c-1"})

    assert await receive(sender) == message_event(original)
    assert await silent(sender, second_tab, listener)
    assert await stored() == [original]


async def test_client_id_is_scoped_to_user_and_room(sockets, alice, bob):
    alice_general = await enter(sockets, alice)
    bob_general = await enter(sockets, bob)
    alice_python = await enter(sockets, alice, "python")
    assert await receive(alice_general) == member_event("join", bob)

    await alice_general.send_json_to({"type": "message", "content": "alice", "client_id": "same"})
    in_general = [await receive(alice_general)]
    await bob_general.send_json_to({"type": "message", "content": "bob", "client_id": "same"})
    in_general.append(await receive(alice_general))
    await alice_python.send_json_to({"type": "message", "content": "python", "client_id": "same"})
    in_python = await receive(alice_python)

    first, second = await stored()
    [third] = await stored("python")
    assert [(m.user, m.content, m.seq) for m in (first, second, third)] == [
        (alice, "alice", 1),
        (bob, "bob", 2),
        (alice, "python", 1),
    ]
    assert in_general == [message_event(first), message_event(second)]
    assert await receive_all(bob_general, 2) == [message_event(first), message_event(second)]
    assert in_python == message_event(third)


async def test_client_id_used_over_rest_then_websocket_returns_the_original(sockets, alice, bob):
    posted = await rest(alice, "post", "/messages/general", {"content": "via rest", "client_id": "c-9"})
    assert posted.status_code == 201
    sender = await enter(sockets, alice)
    listener = await enter(sockets, bob)
    assert await receive(sender) == member_event("join", bob)

    await sender.send_json_to({"type": "message", "content": "via ws", "client_id": "c-9"})

    [original] = await stored()
    assert await receive(sender) == message_event(original)
    assert {"type": "message", **posted.json()} == message_event(original)
    assert await silent(sender, listener)


async def test_client_id_used_over_websocket_then_rest_returns_the_original(sockets, alice, bob):
    sender = await enter(sockets, alice)
    listener = await enter(sockets, bob)
    assert await receive(sender) == member_event("join", bob)
    await sender.send_json_to({"type": "message", "content": "via ws", "client_id": "c-8"})
    echoed = await receive(sender)
    [original] = await stored()
    assert echoed == message_event(original)
    assert await receive(listener) == message_event(original)

    posted = await rest(alice, "post", "/messages/general", {"content": "via rest", "client_id": "c-8"})

    assert posted.status_code == 200
    assert {"type": "message", **posted.json()} == message_event(original)
    assert await silent(sender, listener)
    assert await stored() == [original]


# --- REST posts and commit ------------------------------------------------------------------


async def test_rest_post_reaches_every_open_socket_of_the_room(sockets, alice, bob, carol):
    poster = await enter(sockets, alice)
    listener = await enter(sockets, bob)
    elsewhere = await enter(sockets, carol, "python")
    assert await receive(poster) == member_event("join", bob)

    posted = await rest(alice, "post", "/messages/general", {"content": "from rest"})

    assert posted.status_code == 201
    [message] = await stored()
    assert {"type": "message", **posted.json()} == message_event(message)
    assert await receive(poster) == message_event(message)
    assert await receive(listener) == message_event(message)
    assert await silent(poster, listener, elsewhere)


# --- since= replay --------------------------------------------------------------------------


@pytest.fixture
def five_messages(general, alice, bob) -> list[Message]:
    return [make_message(room=general, user=(alice, bob)[n % 2], content=f"m{n + 1}") for n in range(5)]


async def test_since_replays_newer_messages_oldest_first_between_presence_and_join(sockets, alice, bob, five_messages):
    bystander = await enter(sockets, bob)
    await create_message(room=await sync_to_async(Room.objects.get)(name="python"), user=bob, content="elsewhere")

    communicator = await connect(sockets, alice, since=2)

    assert await receive_all(communicator, 5) == [
        presence_event(alice, bob),
        *[message_event(m) for m in five_messages[2:]],
        member_event("join", alice),
    ]
    assert await silent(communicator)
    assert await receive(bystander) == member_event("join", alice)
    assert await silent(bystander)


async def test_parameters_given_twice_are_read_as_the_http_api_reads_them_the_last(sockets, alice, five_messages):
    query = urlencode([("token", "not-a-token"), ("token", access_token(alice)), ("since", "abc"), ("since", "3")])
    communicator = sockets(f"/ws/general?{query}")
    connected, _ = await communicator.connect()

    assert connected is True
    assert await receive_all(communicator, 4) == [
        presence_event(alice),
        *[message_event(m) for m in five_messages[3:]],
        member_event("join", alice),
    ]
    assert await silent(communicator)  # no bad_request for the first since


@pytest.mark.parametrize("since", [5, 7])
async def test_since_at_or_past_the_newest_message_replays_nothing(sockets, alice, five_messages, since):
    communicator = await connect(sockets, alice, since=since)

    assert await receive_all(communicator, 2) == [presence_event(alice), member_event("join", alice)]
    assert await silent(communicator)


async def test_since_past_the_newest_message_still_delivers_new_messages(sockets, alice, bob, five_messages):
    communicator = await connect(sockets, alice, since=9)
    assert await receive_all(communicator, 2) == [presence_event(alice), member_event("join", alice)]

    message = await create_message(room=five_messages[0].room, user=bob, content="new")

    assert message.seq == 6
    assert await receive(communicator) == message_event(message)


async def test_without_since_there_is_no_replay(sockets, alice, five_messages):
    communicator = await connect(sockets, alice)

    assert await receive_all(communicator, 2) == [presence_event(alice), member_event("join", alice)]
    assert await silent(communicator)


async def test_replay_is_capped_at_1000_oldest_first(sockets, alice, general):
    def thousand_and_one():
        Message.objects.bulk_create(
            Message(room=general, user=alice, content=f"m{seq}", seq=seq) for seq in range(1, 1002)
        )
        Room.objects.filter(pk=general.pk).update(last_seq=1001)

    await sync_to_async(thousand_and_one)()
    assert django_settings.CHAT_REPLAY_LIMIT == 1000

    communicator = await connect(sockets, alice, since=0)

    assert await receive(communicator) == presence_event(alice)
    replayed = await receive_all(communicator, 1000)
    assert [(e["type"], e["seq"], e["content"]) for e in replayed] == [
        ("message", seq, f"m{seq}") for seq in range(1, 1001)
    ]
    assert await receive(communicator) == truncated(replayed_to=1000, last_seq=1001)
    assert await receive(communicator) == member_event("join", alice)
    assert await silent(communicator)


def truncated(*, replayed_to: int, last_seq: int, room: str = "general") -> dict:
    return {"type": "replay_truncated", "room": room, "replayed_to": replayed_to, "last_seq": last_seq}


async def test_replay_cap_follows_the_setting(sockets, alice, five_messages, settings):
    settings.CHAT_REPLAY_LIMIT = 3

    communicator = await connect(sockets, alice, since=1)

    assert await receive_all(communicator, 6) == [
        presence_event(alice),
        *[message_event(m) for m in five_messages[1:4]],
        truncated(replayed_to=4, last_seq=5),  # the client pages seq 5 with GET /messages?after=4
        member_event("join", alice),
    ]
    # Live delivery goes on after the room's newest message.
    await communicator.send_to(text_data="live")
    assert await receive(communicator) == message_event(await get_message(content="live"))
    assert await silent(communicator)


@pytest.mark.parametrize("since", [2, 3])  # exactly the limit missed, and fewer
async def test_a_replay_that_holds_every_missed_message_is_not_truncated(
    sockets, alice, five_messages, settings, since
):
    settings.CHAT_REPLAY_LIMIT = 3

    communicator = await connect(sockets, alice, since=since)

    assert await receive_all(communicator, 5 - since + 2) == [
        presence_event(alice),
        *[message_event(m) for m in five_messages[since:]],
        member_event("join", alice),
    ]
    assert await silent(communicator)


async def test_a_replay_is_not_called_truncated_when_only_deleted_messages_follow_it(
    sockets, alice, five_messages, settings
):
    settings.CHAT_REPLAY_LIMIT = 3
    await sync_to_async(services.message_delete)(messages=five_messages[4:])

    communicator = await connect(sockets, alice, since=1)

    assert await receive_all(communicator, 5) == [
        presence_event(alice),
        *[message_event(m) for m in five_messages[1:4]],
        member_event("join", alice),
    ]
    assert await silent(communicator)


async def test_replay_then_live_delivery_neither_repeats_nor_skips(sockets, alice, bob, five_messages):
    communicator = await connect(sockets, alice, since=3)
    assert await receive_all(communicator, 4) == [
        presence_event(alice),
        *[message_event(m) for m in five_messages[3:]],
        member_event("join", alice),
    ]
    sender = await enter(sockets, bob)
    assert await receive(communicator) == member_event("join", bob)

    await sender.send_to(text_data="m6")

    event = await receive(communicator)
    sixth = await get_message(content="m6")
    assert (event, sixth.seq) == (message_event(sixth), 6)
    assert await silent(communicator, timeout=GAP_FILL_TIMEOUT / 3)


class HeldPublishes:
    """Stands in for chat.services.publish_messages: holds chosen seqs back, publishes the rest."""

    def __init__(self, hold: set[int]) -> None:
        self.hold = hold
        self.held: dict[int, Message] = {}

    def __call__(self, messages: list[Message]) -> list[bool]:
        for message in messages:
            if message.seq in self.hold:
                self.held[message.seq] = message
        return [True if m.seq in self.hold else events.publish_messages([m])[0] for m in messages]

    async def release(self, seq: int) -> None:
        await events.apublish_messages([self.held.pop(seq)])


async def test_a_publish_still_in_flight_during_replay_is_not_delivered_again(
    sockets, alice, bob, general, monkeypatch
):
    publishes = HeldPublishes(hold={3})
    monkeypatch.setattr("chat.services.publish_messages", publishes)
    messages = [await create_message(room=general, user=bob, content=f"m{n}") for n in (1, 2, 3)]

    communicator = await connect(sockets, alice, since=0)
    assert await receive_all(communicator, 5) == [
        presence_event(alice),
        *[message_event(m) for m in messages],
        member_event("join", alice),
    ]
    await publishes.release(3)  # the publish of a message the replay already sent arrives late

    assert await silent(communicator, timeout=GAP_FILL_TIMEOUT / 3)
    fourth = await create_message(room=general, user=bob, content="m4")
    assert await receive(communicator) == message_event(fourth)
    assert await silent(communicator)


@pytest.mark.parametrize("since", [pytest.param("abc", id="letters"), "-1", "1.5", "1e3", "１", "9" * 19, " 1", "0x1"])
async def test_invalid_since_sends_a_bad_request_error_and_the_socket_stays_open(sockets, alice, five_messages, since):
    communicator = await connect(sockets, alice, since=since)

    assert await receive(communicator) == presence_event(alice)
    rest_of_connect = await receive_all(communicator, 2)
    assert sorted(rest_of_connect, key=lambda e: e["type"]) == [error_event("bad_request"), member_event("join", alice)]
    assert await silent(communicator)
    await communicator.send_to(text_data="still open")
    assert await receive(communicator) == message_event(await get_message(content="still open"))


# --- ordering and gaps ----------------------------------------------------------------------


async def test_out_of_order_publishes_are_delivered_in_seq_order_once(sockets, alice, bob, general, monkeypatch):
    listener = await enter(sockets, alice)
    publishes = HeldPublishes(hold={1})
    monkeypatch.setattr("chat.services.publish_messages", publishes)

    first = await create_message(room=general, user=bob, content="first")
    second = await create_message(room=general, user=bob, content="second")  # published before the first
    await publishes.release(1)

    assert await receive_all(listener, 2) == [message_event(first), message_event(second)]
    assert await silent(listener, timeout=GAP_FILL_TIMEOUT / 2)


async def test_a_lost_publish_is_filled_from_the_database_in_order_once(sockets, alice, bob, general, monkeypatch):
    first_socket = await enter(sockets, alice)
    second_socket = await enter(sockets, bob)
    assert await receive(first_socket) == member_event("join", bob)
    publishes = HeldPublishes(hold={2})
    monkeypatch.setattr("chat.services.publish_messages", publishes)

    messages = [await create_message(room=general, user=bob, content=f"m{n}") for n in (1, 2, 3)]

    for communicator in (first_socket, second_socket):
        assert await receive_all(communicator, 3, timeout=GAP_FILL_TIMEOUT) == [message_event(m) for m in messages]
    await publishes.release(2)  # the lost publish turns up after all
    assert await silent(first_socket, second_socket, timeout=GAP_FILL_TIMEOUT / 3)


async def test_the_messages_of_one_commit_arrive_in_seq_order_once(sockets, alice, bob, general, monkeypatch):
    listener = await enter(sockets, alice)
    monkeypatch.setattr("chat.services.publish_messages", lambda messages: [True] * len(messages))
    messages = [await create_message(room=general, user=bob, content=f"m{n}") for n in (1, 2, 3)]

    assert await events.apublish_messages([messages[2], messages[0], messages[1]]) == [True] * 3

    assert await receive_all(listener, 3) == [message_event(m) for m in messages]
    assert await silent(listener, timeout=GAP_FILL_TIMEOUT / 3)


async def test_a_commit_published_after_a_hole_waits_for_it_from_the_database(
    sockets, alice, bob, general, monkeypatch
):
    listener = await enter(sockets, alice)
    monkeypatch.setattr("chat.services.publish_messages", lambda messages: [True] * len(messages))
    messages = [await create_message(room=general, user=bob, content=f"m{n}") for n in (1, 2, 3)]

    await events.apublish_messages(messages[1:])  # the publish of m1 is lost

    assert await receive_all(listener, 3, timeout=GAP_FILL_TIMEOUT) == [message_event(m) for m in messages]
    assert await silent(listener, timeout=GAP_FILL_TIMEOUT / 3)


async def test_a_lost_publish_of_the_rooms_last_message_is_fetched_at_the_next_tail_check(
    sockets, alice, bob, general, monkeypatch
):
    monkeypatch.setattr("chat.tails.TAIL_CHECK_SECONDS", 0.3)
    listener = await enter(sockets, alice)
    monkeypatch.setattr("chat.services.publish_messages", lambda messages: [True] * len(messages))

    last = await create_message(room=general, user=bob, content="nothing comes after me")  # its publish is lost

    assert await receive(listener, timeout=GAP_FILL_TIMEOUT) == message_event(last)
    assert await silent(listener, timeout=1)


async def test_a_repeats_acknowledgement_never_overtakes_a_lower_seq_still_on_its_way(
    sockets, alice, bob, general, monkeypatch
):
    # A client resuming from the highest seq it has seen would skip what the early acknowledgement overtook.
    socket = await enter(sockets, alice)
    publishes = HeldPublishes(hold={1, 2})
    monkeypatch.setattr("chat.services.publish_messages", publishes)
    theirs = await create_message(room=general, user=bob, content="still on its way")
    mine = await create_message(room=general, user=alice, content="sent before a drop", client_id="c-1")

    await socket.send_json_to({"type": "message", "content": "sent before a drop", "client_id": "c-1"})

    assert await receive_all(socket, 2, timeout=GAP_FILL_TIMEOUT) == [message_event(theirs), message_event(mine)]
    for seq in (1, 2):
        await publishes.release(seq)
    assert await silent(socket, timeout=GAP_FILL_TIMEOUT / 3)


class Wire:
    """What a socket's direct writes and ASGI sends put on the wire, in order; writes can be refused."""

    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.out: list[tuple[str, bytes | str]] = []

    def write(self, data: bytes) -> bool:
        if self.refuse:
            return False
        self.out.append(("write", data))
        return True

    async def send(self, message: dict) -> None:
        self.out.append(("send", message["text"]))


def socket_on(wire: Wire) -> RoomConsumer:
    """A joined RoomConsumer, reduced to its delivery state, writing to `wire`."""
    consumer = RoomConsumer()
    consumer.backlog, consumer.emitting, consumer.closed, consumer.tasks = deque(), False, False, []
    consumer.orderer = SeqOrderer(next_seq=1)
    consumer.write_frame, consumer.base_send = wire.write, wire.send
    return consumer


def commit_event(*seqs: int) -> dict:
    return {"type": "chat.messages", "messages": [[seq, f"m{seq}"] for seq in seqs]}


async def test_the_frames_of_a_commit_go_out_in_one_write():
    wire = Wire()
    consumer = socket_on(wire)

    assert consumer.deliver(commit_event(1, 2, 3)) is None

    assert wire.out == [("write", b"".join(text_frame(f"m{seq}") for seq in (1, 2, 3)))]


async def test_a_commit_the_socket_cannot_write_now_goes_through_the_asgi_send_in_order():
    wire = Wire(refuse=True)
    consumer = socket_on(wire)

    pending = consumer.deliver(commit_event(1, 2, 3))
    await pending

    assert wire.out == [("send", "m1"), ("send", "m2"), ("send", "m3")]


async def test_frames_before_an_item_without_one_are_written_and_the_rest_follows_in_order():
    wire = Wire()
    consumer = socket_on(wire)
    consumer.backlog.extend([("message", 2, ("m2", None)), ("message", 1, ("m1", text_frame("m1")))])
    consumer.backlog.append(("message", 3, ("m3", text_frame("m3"))))

    pending = consumer._flush()
    await pending

    assert wire.out == [("write", text_frame("m1")), ("send", "m2"), ("write", text_frame("m3"))]


async def test_a_commit_behind_a_hole_waits_and_goes_out_with_the_message_that_fills_it():
    wire = Wire()
    consumer = socket_on(wire)

    assert consumer.deliver(commit_event(2, 3)) is None
    assert wire.out == []
    consumer.tasks[0].cancel()  # the hole's database fill: not needed, seq 1 arrives
    assert consumer.deliver({"type": "chat.message", "seq": 1, "text": "m1"}) is None

    assert wire.out == [("write", b"".join(text_frame(f"m{seq}") for seq in (1, 2, 3)))]


async def test_a_publish_placed_directly_on_the_group_ahead_of_a_hole_waits_for_it(
    sockets, alice, bob, general, channel_layer, monkeypatch
):
    listener = await enter(sockets, alice)
    # The layer loses everything.
    monkeypatch.setattr("chat.services.publish_messages", lambda messages: [True] * len(messages))
    first = await create_message(room=general, user=bob, content="first")
    second = await create_message(room=general, user=bob, content="second")

    await channel_layer.group_send(
        events.room_group(general.pk),
        {
            "type": "chat.message",
            "group": events.room_group(general.pk),
            "seq": second.seq,
            "text": events.encode(events.message_event(second)),
        },
    )

    assert await receive_all(listener, 2, timeout=GAP_FILL_TIMEOUT) == [message_event(first), message_event(second)]
    assert await silent(listener, timeout=GAP_FILL_TIMEOUT / 3)


# --- GET /rooms online ----------------------------------------------------------------------


async def test_rooms_online_counts_distinct_users_connected_now(sockets, alice, bob, carol):
    first_tab = await enter(sockets, alice)
    second_tab = await enter(sockets, alice, first=False)
    await enter(sockets, bob)
    await enter(sockets, carol, "python")
    refused = sockets(ws_path(token="not-a-jwt"))
    assert (await refused.connect())[0] is True
    unknown_room = sockets(ws_path("no-such-room", token=access_token(carol)))
    assert (await unknown_room.connect())[0] is True

    async def online() -> dict:
        response = await rest(None, "get", "/rooms")
        assert response.status_code == 200
        return {room["name"]: room["online"] for room in response.json()["rooms"]}

    assert await online() == {"general": 2, "python": 1, "frontend": 0, "random": 0}
    await first_tab.disconnect()
    assert await online() == {"general": 2, "python": 1, "frontend": 0, "random": 0}
    await second_tab.disconnect()
    assert await online() == {"general": 1, "python": 1, "frontend": 0, "random": 0}


async def test_rooms_lists_name_title_and_online(sockets, alice):
    await enter(sockets, alice)

    response = await rest(None, "get", "/rooms")

    titles = await sync_to_async(lambda: {r.name: r.title for r in Room.objects.all()})()
    assert response.json() == {
        "rooms": [
            {"name": name, "title": titles[name], "online": 1 if name == "general" else 0, "archived": False}
            for name in ("general", "python", "frontend", "random")
        ]
    }


class SharedStreamWriter:
    """chat.frames.direct_writer for the communicator: direct frames join the same output as ASGI sends.

    Refuses the frames whose text contains `refuse`, as uvicorn's writer does for a paused transport.
    """

    def __init__(self, refuse: str) -> None:
        self.refuse = refuse
        self.direct: list[str] = []

    def __call__(self, send):
        output = send.__self__  # the communicator's queue

        def write(frame: bytes) -> bool:
            text = parse_frame(frame).data.decode()
            if self.refuse in text:
                return False
            event = json.loads(text)
            if event["type"] == "message":
                self.direct.append(event["content"])
            output.put_nowait({"type": "websocket.send", "text": text})
            return True

        return write


async def test_a_refused_direct_frame_goes_through_asgi_in_order_and_direct_writes_resume(
    sockets, alice, bob, general, monkeypatch
):
    writer = SharedStreamWriter(refuse="second")
    monkeypatch.setattr("chat.consumers.direct_writer", writer)
    listener = await enter(sockets, alice)

    messages = [await create_message(room=general, user=bob, content=c) for c in ("first", "second", "third")]

    assert await receive_all(listener, 3) == [message_event(m) for m in messages]
    assert writer.direct == ["first", "third"]


async def test_the_rooms_newest_seq_makes_a_hole_only_for_a_socket_with_nothing_queued():
    wire = Wire(refuse=True)  # a slow reader: nothing can be written directly
    consumer = socket_on(wire)
    consumer.emitting = True  # a send is under way; what arrives waits in the backlog
    consumer.deliver(commit_event(1, 2, 3))

    consumer.deliver({"type": "room.tail", "group": "room.1", "last_seq": 3})

    assert consumer.orderer.hole() is None  # 1-3 are queued here, not missing
    assert consumer.tasks == []
    consumer.backlog.clear()
    consumer.emitting = False
    consumer.deliver({"type": "room.tail", "group": "room.1", "last_seq": 3})
    assert consumer.orderer.hole() == (0, 3)
    for task in consumer.tasks:
        task.cancel()
