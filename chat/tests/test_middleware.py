"""The WebSocket handshake checks in chat/middleware.py: JWT from the query string, browser Origin."""

import logging
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from accounts.tests.factories import UserFactory
from chat.middleware import JWTQueryStringAuthMiddleware
from chat.tests.communicator import Communicator
from chatproject.asgi import application

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@pytest.fixture
def alice(transactional_db):
    return UserFactory(username="alice")


async def scope_after_middleware(query_string: bytes) -> dict:
    """Run the middleware in front of an app that records the scope it is given."""
    seen = []

    async def inner(scope, receive, send):
        seen.append(scope)

    await JWTQueryStringAuthMiddleware(inner)(
        {"type": "websocket", "path": "/ws/general", "query_string": query_string}, None, None
    )
    assert len(seen) == 1
    return seen[0]


async def test_a_valid_access_token_puts_its_user_and_expiry_in_scope(alice):
    token = AccessToken.for_user(alice)
    scope = await scope_after_middleware(f"token={token}&since=3".encode())
    assert scope["user"] == alice
    assert scope["user"].username == "alice"
    assert scope["token_expires_at"] == float(token["exp"])
    assert (scope["type"], scope["path"], scope["query_string"]) == (
        "websocket",
        "/ws/general",
        f"token={token}&since=3".encode(),
    )


def _expired(user) -> str:
    token = AccessToken.for_user(user)
    token.set_exp(lifetime=-timedelta(seconds=5))
    return str(token)


def _inactive(user) -> str:
    user.is_active = False
    user.save(update_fields=["is_active"])
    return str(AccessToken.for_user(user))


@pytest.mark.parametrize(
    "make_query",
    [
        pytest.param(lambda user: b"", id="no-token"),
        pytest.param(lambda user: b"token=", id="empty-token"),
        pytest.param(lambda user: b"token=not.a.jwt", id="malformed"),
        pytest.param(lambda user: f"token={RefreshToken.for_user(user)}".encode(), id="refresh-token"),
        pytest.param(lambda user: f"token={_expired(user)}".encode(), id="expired"),
        pytest.param(lambda user: f"token={_inactive(user)}".encode(), id="inactive-user"),
    ],
)
async def test_a_token_that_is_not_accepted_leaves_no_user_in_scope(alice, make_query):
    query = await sync_to_async(make_query)(alice)
    scope = await scope_after_middleware(query)
    assert (scope["user"], scope["token_expires_at"]) == (None, None)


# --- connection ids and auth-failure log lines ------------------------------------------------


@pytest.mark.parametrize(
    ("make_query", "reason"),
    [
        pytest.param(lambda user: b"", "Token missing", id="no-token"),
        pytest.param(lambda user: b"token=not.a.jwt", "Token is invalid", id="malformed"),
        pytest.param(
            lambda user: f"token={RefreshToken.for_user(user)}".encode(), "Token has wrong type", id="refresh"
        ),
        pytest.param(lambda user: f"token={_expired(user)}".encode(), "Token is expired", id="expired"),
        pytest.param(lambda user: f"token={_inactive(user)}".encode(), "User not found or inactive", id="inactive"),
    ],
)
async def test_a_refused_token_is_logged_with_code_4001_and_its_reason_never_itself(
    alice, json_log, make_query, reason
):
    query = await sync_to_async(make_query)(alice)
    scope = await scope_after_middleware(query)

    assert [
        {key: value for key, value in line.items() if key != "time"} for line in json_log.events("ws.auth_refused")
    ] == [
        {
            "level": "WARNING",
            "logger": "chat.ws",
            "event": "ws.auth_refused",
            "connection_id": scope["connection_id"],
            "code": 4001,
            "reason": reason,
        }
    ]
    token = query.decode().removeprefix("token=")
    if token:
        assert token not in json_log.text()
        assert token.rsplit(".", 1)[-1] not in json_log.text()


async def test_each_socket_gets_its_own_connection_id_carried_by_every_line_it_logs(alice, json_log):
    token = AccessToken.for_user(alice)
    lines_inside = []

    async def inner(scope, receive, send):
        logging.getLogger("chat.ws").info("inside")
        lines_inside.append(scope["connection_id"])

    for _ in range(2):
        await JWTQueryStringAuthMiddleware(inner)(
            {"type": "websocket", "query_string": f"token={token}".encode()}, None, None
        )

    assert len(set(lines_inside)) == 2
    assert [(line["connection_id"], line["user_id"]) for line in json_log.events("inside")] == [
        (connection_id, alice.pk) for connection_id in lines_inside
    ]
    assert json_log.events("ws.auth_refused") == []


# --- Origin ------------------------------------------------------------------------------


async def open_with_origin(alice, origin: bytes | None) -> Communicator:
    headers = [(b"origin", origin)] if origin is not None else []
    return Communicator(application, f"/ws/general?token={AccessToken.for_user(alice)}", headers=headers)


@pytest.mark.parametrize(
    "origin",
    [
        b"http://evil.example",
        b"https://evil.example:8000",
        b"http://localhost.evil.example",
        b"http://evil-localhost",
        b"null",
        b"http://[",  # no URL at all: urlparse raises
        b"http://evil.example:99999",  # a port out of range
    ],
)
async def test_a_browser_origin_outside_allowed_hosts_is_refused_at_the_handshake(alice, origin, caplog):
    communicator = await open_with_origin(alice, origin)
    connected, _ = await communicator.connect()
    assert connected is False
    assert await communicator.receive_nothing()
    await communicator.disconnect()
    assert [r.getMessage() for r in caplog.records if r.name == "chat.ws"] == ["ws.origin_refused"]


async def test_the_last_origin_header_is_the_one_checked(alice):
    headers = [(b"origin", b"http://localhost:8000"), (b"origin", b"http://evil.example")]
    communicator = Communicator(application, f"/ws/general?token={AccessToken.for_user(alice)}", headers=headers)
    connected, _ = await communicator.connect()
    assert connected is False
    await communicator.disconnect()


@pytest.mark.parametrize(
    "origin",
    [
        b"http://localhost:8000",
        b"http://127.0.0.1:8000",
        b"https://localhost",
        b"http://[::1]:8000",
        None,  # non-browser clients send no Origin
    ],
)
async def test_an_allowed_or_missing_origin_reaches_the_room(alice, origin):
    communicator = await open_with_origin(alice, origin)
    connected, _ = await communicator.connect()
    assert connected is True
    assert await communicator.receive_json_from() == {
        "type": "presence",
        "room": "general",
        "users": [{"id": alice.pk, "username": "alice"}],
    }
    await communicator.disconnect()
