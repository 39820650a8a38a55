"""Random frames thrown at the room WebSocket through the real chatproject.asgi.application.

Text of every code point (lone surrogates raw and JSON-escaped, control characters, NUL), binary and
invalid UTF-8, deeply nested JSON, commands with every field of every wrong type, raw JSON numbers a
float cannot hold, and frames over 64 KiB. Whatever arrives, the consumer answers each frame with an
error or a message event, never crashes (a real server would close with 1011) and never logs an error;
what it stores is valid text; and a valid message afterwards still gets its message event.
"""

import json
import logging
import uuid

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework_simplejwt.tokens import AccessToken

from accounts.tests.factories import UserFactory
from chat.models import Message
from chat.tests.communicator import PATIENCE, Communicator
from chatproject.asgi import application

# The consumer reaches the database from a worker thread, so tests need real commits; the
# serialized rollback brings back the rooms the data migration creates.
pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

ROOM = "general"
REFUSALS = {"bad_request", "empty", "too_long"}  # the error codes a frame itself can earn (limits are off)
CLOSE_FRAME_TOO_LARGE = 4009
FRAME_LIMIT = 64 * 1024

# --- strategies -----------------------------------------------------------------------------

# Every code point: lone surrogates (which no UTF-8 socket can carry, so the harshest input), controls, NUL.
any_character = st.characters(exclude_categories=())
EDGE_TEXT = [
    "",
    " ",
    "\t\r\n",
    "\x00",
    "a\x00b",
    "\x1f\x7f\x85",
    "\u00a0\u2000\u3000",  # whitespace beyond ASCII
    "\u200b\u200d\ufeff",  # zero-width, not whitespace
    "\u2028\u2029",
    "\u202e\u2066",  # bidi overrides
    "e\u0301\u0301\u0301",
    "\U0001f600\U0001f9d1\u200d\U0001f680",
    "\ufffe\uffff\U0010ffff",
    "\ud800",
    "\udfff\ud800",
    "x" * settings.CHAT_MAX_MESSAGE_LENGTH,
    "x" * (settings.CHAT_MAX_MESSAGE_LENGTH + 1),
    "é" * settings.CHAT_MAX_MESSAGE_LENGTH,
]
texts = st.one_of(st.text(any_character, max_size=40), st.sampled_from(EDGE_TEXT))

json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.integers(min_value=2**63),
        st.floats(allow_nan=True, allow_infinity=True),
        texts,
    ),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=12,
)
FIELDS = ["type", "content", "client_id"]
kinds = st.one_of(st.sampled_from(["message", "typing", "error", "presence", "MESSAGE", "message ", ""]), json_values)
# Objects that name the fields of the protocol with values of any type, some right and some wrong.
commands = st.fixed_dictionaries(
    {},
    optional={
        "type": kinds,
        "content": json_values,
        "client_id": st.one_of(json_values, st.text(any_character, min_size=60, max_size=70)),
        "extra": json_values,
    },
)

# Raw JSON that json.dumps never writes: numbers a float cannot hold, over-long integers, escapes.
RAW_VALUES = [
    "1e309",
    "-1e309",
    "NaN",
    "-Infinity",
    "1" * 5000,  # longer than Python's int-parsing digit limit
    "-0",
    "0.1e-400",
    '"\\ud800"',
    '"\\udc00\\ud800"',
    '"\\u0000"',
    '"a\\u0000"',
    '"\\u0085\\u00a0"',
    "[]",
    "{}",
    "null",
    "true",
]
raw_commands = st.builds(
    lambda field, value, other: "{" + f'"{field}": {value}' + (f', "{other}": "x"' if other else "") + "}",
    st.sampled_from(FIELDS),
    st.sampled_from(RAW_VALUES),
    st.sampled_from([None, *FIELDS]),
).map(lambda text: text.replace('{"content"', '{"type": "message", "content"'))


def nested(depth: int, shape: str) -> str:
    """JSON nested `depth` deep, under 64 KiB, in one of a few shapes."""
    if shape == "list":
        return "[" * depth + "]" * depth
    if shape == "object":
        return '{"a":' * depth + "1" + "}" * depth
    inner = "[" * depth + "]" * depth
    field = "content" if shape == "content" else "client_id"
    return '{"type": "message", "content": "x", ' + f'"{field}": {inner}' + "}"


deep_json = st.builds(nested, st.integers(1, 10_000), st.sampled_from(["list", "object", "content", "client_id"]))
INVALID_UTF8 = [b"\xff", b"\xc3\x28", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b'{"type": "message\xff"}']
binary = st.one_of(st.binary(max_size=64), st.sampled_from(INVALID_UTF8))


def within_limit(text: str) -> bool:
    """Up to FRAME_LIMIT UTF-8 bytes: a few long values of a command can exceed it (HUGE covers that)."""
    return len(text.encode("utf-8", "surrogatepass")) <= FRAME_LIMIT


# A frame is ("text", str) or ("bytes", bytes).
text_frames = (
    st.one_of(
        texts,
        commands.map(lambda command: json.dumps(command)),  # surrogates and controls \u-escaped
        commands.map(lambda command: json.dumps(command, ensure_ascii=False)),  # raw in the text
        raw_commands,
        deep_json,
        st.just("x" * FRAME_LIMIT),  # exactly the limit: refused as too long, not closed
    )
    .filter(within_limit)
    .map(lambda text: ("text", text))
)
frames = st.lists(st.one_of(text_frames, binary.map(lambda data: ("bytes", data))), min_size=1, max_size=6)
# Over 64 KiB, counted in UTF-8 bytes: closed with 4009 and nothing stored.
HUGE = [
    ("text", "a" * (FRAME_LIMIT + 1)),
    ("text", "€" * (FRAME_LIMIT // 3 + 1)),  # fewer characters than the limit, more bytes
    ("text", "[" * 40_000 + "]" * 40_000),
    ("text", json.dumps({"type": "message", "content": "b" * 70_000})),
    ("bytes", b"\xff" * (FRAME_LIMIT + 1)),
]
huge_frames = st.one_of(st.none(), st.sampled_from(HUGE))


# --- the run --------------------------------------------------------------------------------


@sync_to_async
def new_user_token() -> tuple[int, str]:
    user = UserFactory(username=f"fuzz-{uuid.uuid4().hex[:10]}")
    return user.pk, str(AccessToken.for_user(user))


@sync_to_async
def stored_by(user_id: int) -> list[Message]:
    return list(Message.objects.filter(user_id=user_id, room__name=ROOM).order_by("seq"))


async def open_socket(token: str) -> Communicator:
    communicator = Communicator(application, f"/ws/{ROOM}?token={token}")
    connected, _ = await communicator.connect()
    assert connected
    assert (await communicator.receive_json_from(PATIENCE))["type"] == "presence"
    return communicator


async def send_frame(communicator: Communicator, frame: tuple[str, str | bytes]) -> None:
    kind, payload = frame
    await communicator.send_input(
        {"type": "websocket.receive", "text": payload}
        if kind == "text"
        else {"type": "websocket.receive", "bytes": payload}
    )


async def send_valid_message(communicator: Communicator, user_id: int) -> list[dict]:
    """Send a valid message; return every event before its own message event, which must come."""
    client_id = f"valid-{uuid.uuid4().hex}"
    await communicator.send_json_to({"type": "message", "content": "still works", "client_id": client_id})
    events = []
    while True:
        output = await communicator.receive_output(PATIENCE)
        assert output["type"] == "websocket.send", output  # never a close here, and never a crash
        event = json.loads(output["text"])
        if event.get("type") == "message" and event.get("client_id") == client_id:
            assert event["user"]["id"] == user_id
            assert event["content"] == "still works"
            return events
        events.append(event)


def assert_answers(events: list[dict], user_id: int) -> set[int]:
    """Every answer is a refusal of the frame or a message event of ours; return the seqs announced."""
    seqs = set()
    for event in events:
        if event["type"] == "error":
            assert event["code"] in REFUSALS, event
            assert isinstance(event["detail"], str) and event["detail"], event
            assert isinstance(event.get("client_id", ""), str), event
        else:
            assert event["type"] in ("message", "join"), event  # the join: our own, on connecting
            assert event["user"]["id"] == user_id, event
            if event["type"] == "message":
                seqs.add(event["seq"])
    return seqs


def assert_storable(message: Message) -> None:
    assert isinstance(message.content, str)
    assert message.content.strip()
    assert len(message.content) <= settings.CHAT_MAX_MESSAGE_LENGTH
    assert "\x00" not in message.content
    message.content.encode("utf-8")  # no lone surrogate


@hypothesis_settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
@given(frames=frames, huge=huge_frames)
# Always tried: a refusal that would echo a client_id no UTF-8 socket can carry.
@example(frames=[("text", json.dumps({"type": "message", "content": "", "client_id": "\ud800"}))], huge=None)
async def test_random_frames_never_break_the_socket_or_store_anything_invalid(frames, huge, caplog):
    caplog.clear()
    user_id, token = await new_user_token()
    communicator = await open_socket(token)

    for frame in frames:
        await send_frame(communicator, frame)
    # Frames are handled in order, so everything they caused is sent before the valid message's event.
    events = await send_valid_message(communicator, user_id)
    announced = assert_answers(events, user_id)
    if huge is not None:
        await send_frame(communicator, huge)
        closed = await communicator.receive_output(PATIENCE)
        assert (closed["type"], closed.get("code")) == ("websocket.close", CLOSE_FRAME_TOO_LARGE)
    await communicator.disconnect()  # re-raises anything the application raised

    stored = await stored_by(user_id)
    for message in stored:
        assert_storable(message)
    # Each stored message was announced to its sender (the valid one among them); nothing else was.
    assert {message.seq for message in stored} == announced | {stored[-1].seq}

    if huge is not None:  # a fresh socket still works after a close for size
        communicator = await open_socket(token)
        await send_valid_message(communicator, user_id)
        await communicator.disconnect()

    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []
