"""The WebSocket handshake checks in chat/middleware.py: JWT from the query string, browser Origin."""

from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from accounts.tests.factories import UserFactory
from chat.middleware import JWTQueryStringAuthMiddleware
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


# --- Origin ------------------------------------------------------------------------------


async def open_with_origin(alice, origin: bytes | None) -> WebsocketCommunicator:
    headers = [(b"origin", origin)] if origin is not None else []
    return WebsocketCommunicator(application, f"/ws/general?token={AccessToken.for_user(alice)}", headers=headers)


@pytest.mark.parametrize(
    "origin",
    [
        b"http://evil.example",
        b"https://evil.example:8000",
        b"http://localhost.evil.example",
        b"http://evil-localhost",
        b"null",
    ],
)
async def test_a_browser_origin_outside_allowed_hosts_is_refused_at_the_handshake(alice, origin):
    communicator = await open_with_origin(alice, origin)
    connected, _ = await communicator.connect()
    assert connected is False
    assert await communicator.receive_nothing()
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
