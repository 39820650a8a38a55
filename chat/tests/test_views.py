"""GET /rooms, GET and POST /messages/{room}, /healthz, the API docs, the HTML page, JSON errors and the admin."""

import json
import logging
import re
import sqlite3
from datetime import datetime, timedelta
from html.parser import HTMLParser
from types import SimpleNamespace

import psycopg
import psycopg_pool
import pytest
from asgiref.sync import async_to_sync
from django.contrib import admin
from django.db import DatabaseError, InterfaceError, OperationalError
from django.test import Client
from django.utils import timezone

from accounts.models import User
from accounts.tests.factories import UserFactory
from accounts.tokens import token_pair_issue
from chat import health, services
from chat.models import Message, Room
from chat.presence import presence
from chat.tests.factories import RoomFactory, make_message

pytestmark = pytest.mark.django_db

NOT_PROVIDED = {"detail": "Authentication credentials were not provided."}
ROOM_NOT_FOUND = {"detail": "Room not found"}


def message_json(message: Message) -> dict:
    """The message object as issue 2 spells it."""
    return {
        "id": message.pk,
        "seq": message.seq,
        "room": message.room.name,
        "user": {"id": message.user.pk, "username": message.user.username},
        "content": message.content,
        "timestamp": message.created.isoformat(),
        "client_id": message.client_id,
    }


def assert_unauthorized(response) -> None:
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    assert response.json() == NOT_PROVIDED


# --- GET /rooms -----------------------------------------------------------------------------


def test_rooms_lists_the_four_default_rooms_to_anyone(api_client):
    response = api_client.get("/rooms")

    assert response.status_code == 200
    assert response.json() == {
        "rooms": [
            {"name": "general", "title": "General", "online": 0, "archived": False},
            {"name": "python", "title": "Python", "online": 0, "archived": False},
            {"name": "frontend", "title": "Frontend", "online": 0, "archived": False},
            {"name": "random", "title": "Random", "online": 0, "archived": False},
        ]
    }


def test_rooms_ignores_a_bad_token(api_client):
    api_client.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")

    response = api_client.get("/rooms")

    assert response.status_code == 200
    assert len(response.json()["rooms"]) == 4


def test_rooms_counts_distinct_users_online(api_client, general, user):
    bob = UserFactory(username="bob")
    python = Room.objects.get(name="python")
    connect = async_to_sync(presence.connect)
    connect(room_id=general.pk, room_name="general", user_id=user.pk, username="alice", channel="c1")
    connect(room_id=general.pk, room_name="general", user_id=user.pk, username="alice", channel="c2")  # a second tab
    connect(room_id=general.pk, room_name="general", user_id=bob.pk, username="bob", channel="c3")
    connect(room_id=python.pk, room_name="python", user_id=bob.pk, username="bob", channel="c4")

    response = api_client.get("/rooms")

    assert response.json() == {
        "rooms": [
            {"name": "general", "title": "General", "online": 2, "archived": False},
            {"name": "python", "title": "Python", "online": 1, "archived": False},
            {"name": "frontend", "title": "Frontend", "online": 0, "archived": False},
            {"name": "random", "title": "Random", "online": 0, "archived": False},
        ]
    }


def test_rooms_say_which_are_archived_until_unarchived(api_client, general):
    services.room_archive(room=general)

    assert api_client.get("/rooms").json()["rooms"][:2] == [
        {"name": "general", "title": "General", "online": 0, "archived": True},
        {"name": "python", "title": "Python", "online": 0, "archived": False},
    ]
    services.room_unarchive(room=general)
    assert api_client.get("/rooms").json()["rooms"][0] == {
        "name": "general",
        "title": "General",
        "online": 0,
        "archived": False,
    }


def test_rooms_include_rooms_created_later(api_client):
    RoomFactory(name="django", title="Django")

    names = [room["name"] for room in api_client.get("/rooms").json()["rooms"]]

    assert names == ["general", "python", "frontend", "random", "django"]


# --- GET /messages/{room} -------------------------------------------------------------------


@pytest.fixture
def history(general, user):
    """Five messages in general, seq 1..5."""
    return [make_message(room=general, user=user, content=f"m{n}") for n in range(1, 6)]


def seqs(response) -> list[int]:
    assert response.status_code == 200, response.json()
    return [m["seq"] for m in response.json()]


def test_messages_returns_whole_message_objects_newest_first(auth_client, general, user):
    bob = UserFactory(username="bob")
    first = make_message(room=general, user=user, content="hello", client_id="c-1")
    second = make_message(room=general, user=bob, content="hi alice")

    response = auth_client.get("/messages/general")

    assert response.status_code == 200
    assert response.json() == [message_json(second), message_json(first)]
    assert response.json()[1] == {
        "id": first.pk,
        "seq": 1,
        "room": "general",
        "user": {"id": user.pk, "username": "alice"},
        "content": "hello",
        "timestamp": first.created.isoformat(),
        "client_id": "c-1",
    }


def test_messages_timestamp_is_iso_8601_with_utc_offset(auth_client, general, user):
    make_message(room=general, user=user)

    timestamp = auth_client.get("/messages/general").json()[0]["timestamp"]

    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(\+00:00|Z)", timestamp)
    assert datetime.fromisoformat(timestamp).utcoffset() == timedelta(0)


def test_messages_of_an_empty_room_is_an_empty_list(auth_client, general):
    response = auth_client.get("/messages/general")

    assert response.status_code == 200
    assert response.json() == []


def test_messages_only_lists_the_rooms_own_messages(auth_client, general, user):
    make_message(room=Room.objects.get(name="python"), user=user, content="elsewhere")
    mine = make_message(room=general, user=user, content="here")

    assert auth_client.get("/messages/general").json() == [message_json(mine)]


def test_messages_limit_defaults_to_50(auth_client, general, user):
    for n in range(55):
        make_message(room=general, user=user, content=f"m{n}")

    assert seqs(auth_client.get("/messages/general")) == list(range(55, 5, -1))


def test_messages_limit_bounds(auth_client, general, user):
    for n in range(101):
        make_message(room=general, user=user, content=f"m{n}")

    assert seqs(auth_client.get("/messages/general", {"limit": 1})) == [101]
    assert seqs(auth_client.get("/messages/general", {"limit": 100})) == list(range(101, 1, -1))


def test_messages_skip(auth_client, history):
    assert seqs(auth_client.get("/messages/general", {"skip": 1, "limit": 2})) == [4, 3]
    assert seqs(auth_client.get("/messages/general", {"skip": 4})) == [1]
    assert seqs(auth_client.get("/messages/general", {"skip": 5})) == []


def test_messages_before_pages_back_newest_first(auth_client, history):
    assert seqs(auth_client.get("/messages/general", {"before": 4})) == [3, 2, 1]
    assert seqs(auth_client.get("/messages/general", {"before": 4, "limit": 2})) == [3, 2]
    assert seqs(auth_client.get("/messages/general", {"before": 1})) == []
    assert seqs(auth_client.get("/messages/general", {"before": 1000})) == [5, 4, 3, 2, 1]


def test_messages_after_catches_up_oldest_first(auth_client, history):
    response = auth_client.get("/messages/general", {"after": 2})

    assert response.json() == [message_json(m) for m in history[2:]]
    assert seqs(auth_client.get("/messages/general", {"after": 0, "limit": 2})) == [1, 2]
    assert seqs(auth_client.get("/messages/general", {"after": 5})) == []


@pytest.mark.parametrize(
    ("params", "errors"),
    [
        ({"limit": 0}, {"limit": ["Ensure this value is greater than or equal to 1."]}),
        ({"limit": 101}, {"limit": ["Ensure this value is less than or equal to 100."]}),
        ({"limit": -5}, {"limit": ["Ensure this value is greater than or equal to 1."]}),
        ({"limit": "ten"}, {"limit": ["A valid integer is required."]}),
        ({"limit": "1.5"}, {"limit": ["A valid integer is required."]}),
        ({"limit": "5.0"}, {"limit": ["A valid integer is required."]}),
        ({"limit": "+5"}, {"limit": ["A valid integer is required."]}),
        ({"limit": " 5"}, {"limit": ["A valid integer is required."]}),
        ({"limit": "５"}, {"limit": ["A valid integer is required."]}),
        ({"limit": "٥"}, {"limit": ["A valid integer is required."]}),
        ({"limit": ""}, {"limit": ["A valid integer is required."]}),
        ({"after": ""}, {"after": ["A valid integer is required."]}),
        ({"limit": "9" * 5000}, {"limit": ["String value too large."]}),
        ({"skip": -1}, {"skip": ["Ensure this value is greater than or equal to 0."]}),
        ({"skip": "x"}, {"skip": ["A valid integer is required."]}),
        ({"skip": 10**10}, {"skip": ["Ensure this value is less than or equal to 1000000000."]}),
        ({"before": -1}, {"before": ["Ensure this value is greater than or equal to 0."]}),
        ({"before": "latest"}, {"before": ["A valid integer is required."]}),
        ({"before": 2**63}, {"before": ["Ensure this value is less than or equal to 4611686018427387904."]}),
        ({"after": -1}, {"after": ["Ensure this value is greater than or equal to 0."]}),
        ({"after": "0x10"}, {"after": ["A valid integer is required."]}),
        ({"after": 10**30}, {"after": ["Ensure this value is less than or equal to 4611686018427387904."]}),
        (
            {"limit": 0, "skip": -1},
            {
                "limit": ["Ensure this value is greater than or equal to 1."],
                "skip": ["Ensure this value is greater than or equal to 0."],
            },
        ),
    ],
)
def test_messages_refuses_bad_parameters(auth_client, history, params, errors):
    response = auth_client.get("/messages/general", params)

    assert response.status_code == 400
    assert response.json() == errors


# Names no room can have (not a slug of at most 50 characters) are unknown rooms too; a NUL, which
# PostgreSQL refuses in text, never reaches the database.
UNKNOWN_ROOMS = ["nowhere", "%00", "general%00", "caf%C3%A9", "a" * 51]


@pytest.mark.parametrize("room", UNKNOWN_ROOMS)
def test_messages_unknown_room_is_404(auth_client, room):
    response = auth_client.get(f"/messages/{room}")

    assert response.status_code == 404
    assert response.json() == ROOM_NOT_FOUND


def test_messages_without_token_is_401(api_client, history):
    assert_unauthorized(api_client.get("/messages/general"))


def test_messages_with_bad_token_is_401(api_client, history):
    api_client.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")

    response = api_client.get("/messages/general")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"


# --- POST /messages/{room} ------------------------------------------------------------------


def test_post_message_answers_201_with_the_message_object(auth_client, general, user):
    response = auth_client.post("/messages/general", {"content": "hello", "client_id": "tab-1"}, format="json")

    assert response.status_code == 201
    message = Message.objects.get()
    assert response.json() == {
        "id": message.pk,
        "seq": 1,
        "room": "general",
        "user": {"id": user.pk, "username": "alice"},
        "content": "hello",
        "timestamp": message.created.isoformat(),
        "client_id": "tab-1",
    }
    assert datetime.fromisoformat(response.json()["timestamp"]).utcoffset() == timedelta(0)


def test_post_message_by_a_user_banned_while_the_request_ran_answers_401_and_stores_nothing(api_client, general, user):
    User.objects.filter(pk=user.pk).update(is_active=False)
    api_client.force_authenticate(user=user)  # accepted as active, as a request under way was

    response = api_client.post("/messages/general", {"content": "hi"}, format="json")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    assert response.json() == {"detail": "User is inactive", "code": "user_inactive"}
    assert Message.objects.count() == 0


def test_post_message_without_client_id_has_null_client_id(auth_client, general):
    response = auth_client.post("/messages/general", {"content": "hello"}, format="json")

    assert response.status_code == 201
    assert response.json() == message_json(Message.objects.get())
    assert response.json()["client_id"] is None


def test_post_message_null_client_id_twice_stores_two(auth_client, general):
    first = auth_client.post("/messages/general", {"content": "a", "client_id": None}, format="json")
    second = auth_client.post("/messages/general", {"content": "a", "client_id": None}, format="json")

    assert (first.status_code, second.status_code) == (201, 201)
    assert [first.json()["seq"], second.json()["seq"]] == [1, 2]


def test_post_message_is_the_same_object_history_returns(auth_client, general):
    posted = auth_client.post("/messages/general", {"content": "hello"}, format="json").json()

    assert auth_client.get("/messages/general").json() == [posted]


def test_post_message_numbers_messages_per_room(auth_client, general):
    contents = ["one", "two", "three"]
    posted = [auth_client.post("/messages/general", {"content": c}, format="json").json() for c in contents]
    elsewhere = auth_client.post("/messages/python", {"content": "x"}, format="json").json()

    assert [m["seq"] for m in posted] == [1, 2, 3]
    assert (elsewhere["room"], elsewhere["seq"]) == ("python", 1)


def test_post_message_same_client_id_returns_the_original(auth_client, general):
    first = auth_client.post("/messages/general", {"content": "hello", "client_id": "abc"}, format="json")

    again = auth_client.post("/messages/general", {"content": "hello again", "client_id": "abc"}, format="json")

    assert again.status_code == 200
    assert again.json() == first.json()
    assert again.json()["content"] == "hello"
    assert Message.objects.count() == 1
    assert Room.objects.get(name="general").last_seq == 1


def test_post_message_same_client_id_from_another_user_or_room_is_new(auth_client, general):
    bob_client = auth_client.__class__()
    bob_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_pair_issue(user=UserFactory()).access_token}")
    auth_client.post("/messages/general", {"content": "a", "client_id": "abc"}, format="json")

    by_bob = bob_client.post("/messages/general", {"content": "b", "client_id": "abc"}, format="json")
    in_python = auth_client.post("/messages/python", {"content": "c", "client_id": "abc"}, format="json")

    assert (by_bob.status_code, by_bob.json()["seq"]) == (201, 2)
    assert (in_python.status_code, in_python.json()["seq"]) == (201, 1)
    assert Message.objects.count() == 3


def test_post_message_publishes_once_on_commit(auth_client, general, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as created:
        auth_client.post("/messages/general", {"content": "hello", "client_id": "abc"}, format="json")
    with django_capture_on_commit_callbacks() as repeated:
        auth_client.post("/messages/general", {"content": "hello", "client_id": "abc"}, format="json")

    assert (len(created), len(repeated)) == (1, 0)


def test_post_message_at_the_length_limit(auth_client, general, settings):
    settings.CHAT_MAX_MESSAGE_LENGTH = 10

    response = auth_client.post("/messages/general", {"content": "é" * 10}, format="json")

    assert response.status_code == 201
    assert response.json()["content"] == "é" * 10


def test_post_message_keeps_unicode_and_surrounding_whitespace(auth_client, general):
    content = "  naïve 😀 \n 日本語  "

    response = auth_client.post("/messages/general", {"content": content}, format="json")

    assert response.status_code == 201
    assert response.json()["content"] == content
    assert Message.objects.get().content == content


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"content": ""}, {"content": ["Message is empty."]}),
        ({"content": "   "}, {"content": ["Message is empty."]}),
        ({"content": " \n\t\r "}, {"content": ["Message is empty."]}),
        ({"content": "\u200b\u200d\ufeff"}, {"content": ["Message has no visible characters."]}),
        ({"content": "\u3164 \u2800\ufe0f"}, {"content": ["Message has no visible characters."]}),
        ({"content": "x" * 11}, {"content": ["Message is longer than 10 characters."]}),
        ({"content": 42}, {"content": ["content must be a string."]}),
        ({"content": 4.2}, {"content": ["content must be a string."]}),
        ({"content": True}, {"content": ["content must be a string."]}),
        ({"content": ["hello"]}, {"content": ["content must be a string."]}),
        ({"content": {"text": "hello"}}, {"content": ["content must be a string."]}),
        ({"content": None}, {"content": ["content must be a string."]}),
        ({"content": "nul\x00byte"}, {"content": ["content contains characters that cannot be stored."]}),
        ({}, {"content": ["This field is required."]}),
        ({"text": "hello"}, {"content": ["This field is required."]}),
        (
            {"content": "hi", "client_id": "x" * 65},
            {"client_id": ["client_id must be a string of 1 to 64 characters."]},
        ),
        ({"content": "hi", "client_id": ""}, {"client_id": ["client_id must be a string of 1 to 64 characters."]}),
        ({"content": "hi", "client_id": 7}, {"client_id": ["client_id must be a string of 1 to 64 characters."]}),
        ({"content": "hi", "client_id": ["a"]}, {"client_id": ["client_id must be a string of 1 to 64 characters."]}),
        (
            {"content": "hi", "client_id": {"a": 1}},
            {"client_id": ["client_id must be a string of 1 to 64 characters."]},
        ),
        (
            {"content": "hi", "client_id": "a\x00b"},
            {"client_id": ["client_id must be a string of 1 to 64 characters."]},
        ),
    ],
)
def test_post_message_refuses_bad_input(auth_client, general, settings, body, errors):
    settings.CHAT_MAX_MESSAGE_LENGTH = 10

    response = auth_client.post("/messages/general", body, format="json")

    assert response.status_code == 400
    assert response.json() == errors
    assert not Message.objects.exists()
    assert Room.objects.get(name="general").last_seq == 0


def test_post_message_longer_than_the_default_limit(auth_client, general):
    response = auth_client.post("/messages/general", {"content": "x" * 4001}, format="json")

    assert response.status_code == 400
    assert response.json() == {"content": ["Message is longer than 4000 characters."]}
    assert auth_client.post("/messages/general", {"content": "x" * 4000}, format="json").status_code == 201


def test_post_message_client_id_of_64_chars_is_accepted(auth_client, general):
    response = auth_client.post("/messages/general", {"content": "hi", "client_id": "c" * 64}, format="json")

    assert response.status_code == 201
    assert response.json()["client_id"] == "c" * 64


@pytest.mark.parametrize(
    ("raw", "errors"),
    [
        ('{"content": "\\ud800"}', {"content": ["content contains characters that cannot be stored."]}),
        ('{"content": "a\\udfffb"}', {"content": ["content contains characters that cannot be stored."]}),
        ('{"content": "\\u0000"}', {"content": ["content contains characters that cannot be stored."]}),
        (
            '{"content": "hi", "client_id": "\\ud800"}',
            {"client_id": ["client_id must be a string of 1 to 64 characters."]},
        ),
    ],
)
def test_post_message_refuses_text_that_cannot_be_stored(auth_client, general, raw, errors):
    response = auth_client.post("/messages/general", raw, content_type="application/json")

    assert response.status_code == 400
    assert response.json() == errors
    assert not Message.objects.exists()


@pytest.mark.parametrize(
    ("raw", "errors"),
    [
        ('["hello"]', {"non_field_errors": ["Expected a JSON object."]}),
        ('"hello"', {"non_field_errors": ["Expected a JSON object."]}),
        ("42", {"non_field_errors": ["Expected a JSON object."]}),
        ("null", {"non_field_errors": ["Expected a JSON object."]}),
        (
            '{"content": ',
            {"detail": "JSON parse error - Expecting value: line 1 column 13 (char 12)"},
        ),
    ],
)
def test_post_message_refuses_non_object_and_malformed_json(auth_client, general, raw, errors):
    response = auth_client.post("/messages/general", raw, content_type="application/json")

    assert response.status_code == 400
    assert response.json() == errors


@pytest.mark.parametrize("room", UNKNOWN_ROOMS)
def test_post_message_unknown_room_is_404(auth_client, room):
    response = auth_client.post(f"/messages/{room}", {"content": "hello"}, format="json")

    assert response.status_code == 404
    assert response.json() == ROOM_NOT_FOUND
    assert not Message.objects.exists()


def test_post_message_without_token_is_401(api_client, general):
    response = api_client.post("/messages/general", {"content": "hello"}, format="json")

    assert_unauthorized(response)
    assert not Message.objects.exists()


# --- GET /healthz ---------------------------------------------------------------------------


class _BrokenConnection:
    def cursor(self):
        raise DatabaseError("database is down")


class _SilentLayer:
    """A channel layer that accepts messages and never delivers them."""

    async def new_channel(self, prefix="specific."):
        return prefix + "x"

    async def send(self, channel, message):
        return None

    async def receive(self, channel):
        import asyncio

        await asyncio.Event().wait()


class _FailingLayer(_SilentLayer):
    async def send(self, channel, message):
        raise ConnectionError("channel layer is down")


def test_healthz_ok(api_client):
    response = api_client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "channel_layer": "ok"}


def test_healthz_503_when_the_database_fails(api_client, monkeypatch):
    monkeypatch.setattr(health, "connection", _BrokenConnection())

    response = api_client.get("/healthz")

    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "database": "unavailable", "channel_layer": "ok"}


def test_healthz_waits_for_a_pooled_database_connection_no_longer_than_its_own_timeout(api_client, monkeypatch):
    asked = []

    class Pool:
        def open(self):
            asked.append("open")

        def connection(self, timeout):
            asked.append(timeout)
            raise OperationalError("couldn't get a connection after 2.00 sec")

    monkeypatch.setattr(health, "connection", SimpleNamespace(pool=Pool()))

    response = api_client.get("/healthz")

    assert (response.status_code, response.json()["database"], asked) == (
        503,
        "unavailable",
        ["open", health.TIMEOUT_SECONDS],
    )


def test_a_503_is_logged_once_with_its_request_id(api_client, monkeypatch, json_log):
    monkeypatch.setattr(health, "connection", _BrokenConnection())

    response = api_client.get("/healthz")

    answered = [line for line in json_log.lines() if line["level"] == "ERROR"]
    assert [(line["event"], line["status"], line["request_id"]) for line in answered] == [
        ("http.request", 503, response["X-Request-ID"])
    ]


@pytest.mark.parametrize("layer", [_FailingLayer(), _SilentLayer()], ids=["raises", "never-answers"])
def test_healthz_503_when_the_channel_layer_fails(api_client, monkeypatch, layer):
    monkeypatch.setattr(health, "get_channel_layer", lambda: layer)
    monkeypatch.setattr(health, "TIMEOUT_SECONDS", 0.2)

    response = api_client.get("/healthz")

    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "database": "ok", "channel_layer": "unavailable"}


def test_healthz_503_when_redis_is_unreachable(api_client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:9/0"

    response = api_client.get("/healthz")

    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "database": "ok", "channel_layer": "unavailable"}


def test_healthz_503_when_both_fail(api_client, monkeypatch):
    monkeypatch.setattr(health, "connection", _BrokenConnection())
    monkeypatch.setattr(health, "get_channel_layer", lambda: _FailingLayer())

    response = api_client.get("/healthz")

    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "database": "unavailable", "channel_layer": "unavailable"}


# --- OpenAPI schema and Swagger UI ----------------------------------------------------------

CONTRACT_OPERATIONS = {
    "/register": ["post"],
    "/token": ["post"],
    "/token/refresh": ["post"],
    "/logout": ["post"],
    "/users/me": ["get"],
    "/ws-ticket": ["post"],
    "/rooms": ["get", "post"],
    "/messages/{room}": ["get", "post"],
    "/healthz": ["get"],
}


@pytest.fixture
def schema(api_client) -> dict:
    response = api_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return json.loads(response.content)


@pytest.mark.parametrize("path", ["/api/schema/", "/api/docs/", "/api/docs/?script="])
def test_the_schema_and_its_docs_ignore_a_stale_bearer_header_as_the_other_public_endpoints_do(api_client, path):
    response = api_client.get(path, HTTP_AUTHORIZATION="Bearer not-a-token")
    assert response.status_code == 200


def test_every_operation_with_a_body_lists_the_415_it_answers_to_another_media_type(api_client, auth_client, schema):
    with_body = [
        (path, method) for path, ops in schema["paths"].items() for method, op in ops.items() if "requestBody" in op
    ]
    assert sorted(with_body) == [
        ("/logout", "post"),
        ("/messages/{room}", "post"),
        ("/register", "post"),
        ("/rooms", "post"),
        ("/token", "post"),
        ("/token/refresh", "post"),
    ]
    for path, method in with_body:
        assert schema["paths"][path][method]["responses"]["415"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Error"
        }
    response = auth_client.post("/rooms", "a room", content_type="text/plain")
    assert (response.status_code, list(response.json())) == (415, ["detail"])


def test_every_json_operation_lists_the_503_it_answers_while_the_database_cannot_be_reached(schema):
    answers = {
        (path, method): op["responses"]["503"]
        for path, ops in schema["paths"].items()
        for method, op in ops.items()
        if "503" in op["responses"]
    }
    assert sorted(answers) == sorted(
        (path, method) for path, methods in CONTRACT_OPERATIONS.items() for method in methods
    )
    own = {"/healthz", "/ws-ticket"}  # a 503 of their own: the health report; tickets' store unavailable
    for (path, _), answer in answers.items():
        reference = answer["content"]["application/json"]["schema"]["$ref"]
        assert reference == ("#/components/schemas/Health" if path == "/healthz" else "#/components/schemas/Error")
        if path not in own:
            assert answer["headers"]["Retry-After"]["schema"] == {"type": "integer"}


def test_every_json_operation_lists_the_406_it_answers_to_an_accept_header_without_json(auth_client, schema):
    listed = sorted((path, method) for path, ops in schema["paths"].items() for method, op in ops.items())
    assert listed == sorted((path, method) for path, methods in CONTRACT_OPERATIONS.items() for method in methods)
    for path, method in listed:
        assert schema["paths"][path][method]["responses"]["406"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Error"
        }
    for path in ("/healthz", "/rooms", "/messages/general", "/users/me"):
        response = auth_client.get(path, HTTP_ACCEPT="text/html")
        assert (response.status_code, list(response.json())) == (406, ["detail"]), path


def test_schema_names_what_a_refused_message_and_a_bad_token_carry(schema, auth_client, user):
    components = schema["components"]["schemas"]
    forbidden = schema["paths"]["/messages/{room}"]["post"]["responses"]["403"]["content"]["application/json"]
    assert forbidden["schema"] == {"$ref": "#/components/schemas/ForbiddenMessage"}
    assert components["ForbiddenMessage"]["required"] == ["code", "detail"]
    assert set(components["ForbiddenMessage"]["properties"]) == {"detail", "code", "until"}
    assert components["ForbiddenMessageCodeEnum"]["enum"] == ["muted", "archived"]
    assert set(components["Error"]["properties"]) == {"detail", "code", "messages"}
    assert components["Error"]["required"] == ["detail"]
    grant_type = components["TokenRequestRequest"]["properties"]["grant_type"]
    assert components[grant_type["allOf"][0]["$ref"].rsplit("/", 1)[1]]["enum"] == ["password"]

    services.mute_create(user=user, room=Room.objects.get(name="general"), until=timezone.now() + timedelta(minutes=5))
    refused = auth_client.post("/messages/general", {"content": "hi"}, format="json").json()
    assert set(refused) <= set(components["ForbiddenMessage"]["properties"])
    assert set(components["ForbiddenMessage"]["required"]) <= set(refused)


def test_schema_is_openapi_3(api_client, schema):
    yaml_response = api_client.get("/api/schema/")

    assert yaml_response.status_code == 200
    assert yaml_response.content.startswith(b"openapi: 3.")
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"] == "Chat API"


def test_schema_lists_every_path_of_the_api(schema):
    operations = {path: sorted(methods) for path, methods in schema["paths"].items()}

    assert operations == CONTRACT_OPERATIONS


def test_schema_documents_message_history_parameters(schema):
    [path] = [p for p in schema["paths"] if p.rstrip("/") == "/messages/{room}"]
    parameters = {p["name"]: p for p in schema["paths"][path]["get"]["parameters"]}

    assert sorted(parameters) == ["after", "before", "limit", "room", "skip"]
    assert (parameters["limit"]["schema"]["minimum"], parameters["limit"]["schema"]["maximum"]) == (1, 100)
    assert parameters["limit"]["schema"]["default"] == 50
    assert parameters["skip"]["schema"]["minimum"] == 0


def test_schema_declares_bearer_auth_on_protected_operations(schema):
    schemes = schema.get("components", {}).get("securitySchemes", {})
    bearer = [name for name, s in schemes.items() if s.get("type") == "http" and s.get("scheme") == "bearer"]
    assert bearer, f"no HTTP bearer security scheme in {schemes}"
    protected = {"/logout": "post", "/users/me": "get", "/messages/{room}": "get"}
    by_contract_path = {p.rstrip("/"): ops for p, ops in schema["paths"].items()}

    for path, method in protected.items():
        security = by_contract_path[path][method].get("security", [])
        assert any(bearer[0] in requirement for requirement in security), (path, security)


class _AssetCollector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.assets: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script" and attrs.get("src"):
            self.assets.append(attrs["src"])
        if tag == "link" and attrs.get("href"):
            self.assets.append(attrs["href"])


def test_docs_serve_swagger_ui_from_local_static_files(api_client):
    response = api_client.get("/api/docs/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    collector = _AssetCollector()
    collector.feed(html)
    assert any(a.endswith("swagger-ui-bundle.js") for a in collector.assets)
    assert any(a.endswith("swagger-ui.css") for a in collector.assets)
    # Swagger UI's start-up script is served by the view itself (?script=), not inline: see the CSP.
    assert all(a.startswith("/static/") or a == "/api/docs/?script=" for a in collector.assets), collector.assets
    assert not re.search(r"https?://", html), "the docs page refers to another host"
    for asset in collector.assets:
        asset_response = Client().get(asset)
        assert asset_response.status_code == 200, asset
        assert b"".join(asset_response.streaming_content if asset_response.streaming else [asset_response.content])


def test_docs_point_at_the_local_schema(api_client):
    script = api_client.get("/api/docs/?script=").content.decode()

    assert 'url: "/api/schema/"' in script


# --- Pages and JSON errors ------------------------------------------------------------------


def test_index_is_an_html_page(api_client):
    response = api_client.get("/")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/html; charset=utf-8"
    assert response.content.lstrip().lower().startswith(b"<!doctype html>")


def test_the_pages_message_box_counts_against_the_servers_length_limit(api_client, settings):
    settings.CHAT_MAX_MESSAGE_LENGTH = 280

    page = api_client.get("/").content.decode()

    assert re.search(r'<textarea id="message-input"[^>]*data-max-length="280"', page)


@pytest.mark.parametrize("path", ["/nope", "/messages/general/extra", "/api/", "/static/missing.js"])
def test_unknown_path_is_a_json_404(api_client, path):
    response = api_client.get(path)

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not found."}


def test_unknown_path_post_is_a_json_404(api_client):
    response = api_client.post("/nope", {"a": 1}, format="json")

    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


def test_wrong_method_is_a_json_405(api_client):
    response = api_client.delete("/rooms")

    assert response.status_code == 405
    assert response.json() == {"detail": 'Method "DELETE" not allowed.'}


def test_unexpected_exception_is_a_json_500(api_client, monkeypatch):
    def explode():
        raise RuntimeError("boom")

    monkeypatch.setattr("chat.selectors.room_list", explode)
    api_client.raise_request_exception = False

    response = api_client.get("/rooms")

    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Internal server error."}


def django_error(cause: Exception, kind=OperationalError) -> Exception:
    """As Django raises a driver's error: its own class, the driver's error as the cause."""
    error = kind(str(cause))
    error.__cause__ = cause
    return error


UNREACHABLE = [
    django_error(psycopg.OperationalError("connection failed: Connection refused")),
    django_error(psycopg_pool.PoolTimeout("couldn't get a connection after 10.00 sec")),
    django_error(psycopg.errors.AdminShutdown("terminating connection due to administrator command")),
    django_error(psycopg.errors.TooManyConnections("sorry, too many clients already")),
    django_error(sqlite3.OperationalError("database is locked")),
    django_error(psycopg.InterfaceError("the connection is closed"), InterfaceError),
]
NOT_AN_OUTAGE = [
    django_error(sqlite3.OperationalError("no such table: chat_message")),
    django_error(psycopg.errors.DiskFull("could not extend file")),
    django_error(psycopg.errors.DeadlockDetected("deadlock detected")),
]


@pytest.mark.parametrize("error", UNREACHABLE, ids=lambda e: type(e.__cause__).__name__)
def test_a_database_that_cannot_be_reached_is_a_json_503_to_retry(auth_client, general, monkeypatch, caplog, error):
    def unreachable(**kwargs):
        raise error

    monkeypatch.setattr("chat.selectors.message_list", unreachable)
    auth_client.raise_request_exception = False

    response = auth_client.get("/messages/general")

    assert (response.status_code, response["Retry-After"]) == (503, "5")
    assert response.json() == {"detail": "The service is unavailable; try again shortly.", "code": "unavailable"}
    assert ("chat.errors", logging.WARNING, f"GET /messages/general: database unavailable ({error})") in (
        caplog.record_tuples
    )
    assert not [r for r in caplog.records if r.exc_info]  # an outage, not a crash: no traceback


@pytest.mark.parametrize("error", NOT_AN_OUTAGE, ids=lambda e: type(e.__cause__).__name__)
def test_a_database_error_that_retrying_would_not_mend_stays_a_500_with_its_traceback(
    auth_client, general, monkeypatch, caplog, error
):
    def failing(**kwargs):
        raise error

    monkeypatch.setattr("chat.selectors.message_list", failing)
    auth_client.raise_request_exception = False

    response = auth_client.get("/messages/general")

    assert (response.status_code, response.json()) == (500, {"detail": "Internal server error."})
    assert [r.exc_info[1] for r in caplog.records if r.exc_info] == [error]


def test_unexpected_exception_in_an_authenticated_view_is_a_json_500(auth_client, general, monkeypatch):
    def explode(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("chat.selectors.message_list", explode)
    auth_client.raise_request_exception = False

    response = auth_client.get("/messages/general")

    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error."}


# --- /admin/ --------------------------------------------------------------------------------


@pytest.fixture
def admin_client(db) -> Client:
    client = Client()
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    return client


def test_admin_index_lists_users_rooms_and_messages(admin_client):
    response = admin_client.get("/admin/")

    assert response.status_code == 200
    html = response.content.decode()
    for url in ["/admin/accounts/user/", "/admin/chat/room/", "/admin/chat/message/"]:
        assert f'href="{url}"' in html


def test_admin_user_changelist_search_and_filter(admin_client, user):
    UserFactory(username="bob", is_active=False)

    searched = admin_client.get("/admin/accounts/user/", {"q": "ali"})
    filtered = admin_client.get("/admin/accounts/user/", {"is_active__exact": "0"})

    assert searched.status_code == 200
    assert [u.username for u in searched.context["cl"].result_list] == ["alice"]
    assert filtered.status_code == 200
    assert [u.username for u in filtered.context["cl"].result_list] == ["bob"]


def test_admin_room_changelist_search_and_filter(admin_client):
    searched = admin_client.get("/admin/chat/room/", {"q": "pyth"})
    filtered = admin_client.get("/admin/chat/room/", {"name__startswith": "f"})

    assert searched.status_code == 200
    assert [r.name for r in searched.context["cl"].result_list] == ["python"]
    assert filtered.status_code == 200
    assert [r.name for r in filtered.context["cl"].result_list] == ["frontend"]


def test_admin_message_changelist_search_and_filter(admin_client, general, user):
    python = Room.objects.get(name="python")
    hello = make_message(room=general, user=user, content="hello world")
    make_message(room=general, user=user, content="bye")
    in_python = make_message(room=python, user=user, content="hello snake")

    searched = admin_client.get("/admin/chat/message/", {"q": "hello"})
    filtered = admin_client.get("/admin/chat/message/", {"room__id__exact": python.pk})

    assert searched.status_code == 200
    assert sorted(m.pk for m in searched.context["cl"].result_list) == sorted([hello.pk, in_python.pk])
    assert filtered.status_code == 200
    assert [m.pk for m in filtered.context["cl"].result_list] == [in_python.pk]


@pytest.mark.parametrize("model", [User, Room, Message], ids=["User", "Room", "Message"])
def test_admin_registrations_have_list_display_search_and_filters(model):
    model_admin = admin.site._registry[model]

    assert len(model_admin.list_display) > 1
    assert model_admin.search_fields
    assert model_admin.list_filter


def test_admin_changelists_render_rows(admin_client, general, user):
    make_message(room=general, user=user, content="x" * 100)

    for url in ["/admin/accounts/user/", "/admin/chat/room/", "/admin/chat/message/"]:
        response = admin_client.get(url)
        assert response.status_code == 200, url
    assert "x" * 79 + "…" in admin_client.get("/admin/chat/message/").content.decode()
