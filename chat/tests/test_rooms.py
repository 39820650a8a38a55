"""POST /rooms: users create rooms; the room counts against the same send rate as messages."""

import pytest
from rest_framework.test import APIClient

from accounts.tests.factories import UserFactory
from accounts.tokens import token_pair_issue
from chat.models import Room


def test_create_room_then_it_is_listed_at_once(auth_client):
    response = auth_client.post("/rooms", {"name": "book-club", "title": "Book club"}, format="json")

    assert response.status_code == 201
    assert response.json() == {"name": "book-club", "title": "Book club", "online": 0, "archived": False}
    assert APIClient().get("/rooms").json()["rooms"][-1] == {
        "name": "book-club",
        "title": "Book club",
        "online": 0,
        "archived": False,
    }


ONE_LINE = "Use one line of text, without control or text-direction characters."


def test_a_title_may_hold_any_script_and_emoji_sequences(auth_client):
    title = "Ελληνικά עברית 中文 👩\u200d💻"  # the zero-width joiner of the emoji sequence is allowed
    response = auth_client.post("/rooms", {"name": "world", "title": title}, format="json")
    assert (response.status_code, response.json()["title"]) == (201, title)


def test_title_is_optional(auth_client):
    response = auth_client.post("/rooms", {"name": "quiet"}, format="json")
    assert (response.status_code, response.json()) == (
        201,
        {"name": "quiet", "title": "", "online": 0, "archived": False},
    )


def test_a_title_may_stack_a_few_marks_on_a_letter(auth_client):
    title = "Tiếng Việt " + "e" + "\u0301" * 8  # Vietnamese stacks two; eight is the most
    response = auth_client.post("/rooms", {"name": "viet", "title": title}, format="json")
    assert (response.status_code, response.json()["title"]) == (201, title)


def test_a_title_that_would_show_nothing_is_no_title(auth_client):
    response = auth_client.post("/rooms", {"name": "blank", "title": "\u200b\u3164 \u2800"}, format="json")
    assert (response.status_code, response.json()) == (
        201,
        {"name": "blank", "title": "", "online": 0, "archived": False},
    )


def test_a_null_title_is_no_title_as_the_schema_says(auth_client, api_client):
    response = auth_client.post("/rooms", {"name": "quiet", "title": None}, format="json")
    assert (response.status_code, response.json()) == (
        201,
        {"name": "quiet", "title": "", "online": 0, "archived": False},
    )

    schema = api_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    assert schema["components"]["schemas"]["RoomCreateRequest"]["properties"]["title"]["nullable"] is True


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"name": "general"}, {"name": ["A room with that name already exists."]}),
        ({"name": "GENERAL"}, {"name": ["A room with that name already exists."]}),
        ({"name": "two words"}, {"name": ["Use 1-50 letters, digits, hyphens or underscores."]}),
        ({"name": ""}, {"name": ["Use 1-50 letters, digits, hyphens or underscores."]}),
        ({"name": "x" * 51}, {"name": ["Use 1-50 letters, digits, hyphens or underscores."]}),
        ({"name": 7}, {"name": ["Use 1-50 letters, digits, hyphens or underscores."]}),
        ({"name": "ok", "title": "t" * 201}, {"title": ["Use a text of at most 200 characters."]}),
        ({"name": "ok", "title": 5}, {"title": ["Must be a string."]}),
        ({"name": "ok", "title": ["a"]}, {"title": ["Must be a string."]}),
        ({"name": "ok", "title": "cats \u202egnp.exe"}, {"title": [ONE_LINE]}),
        ({"name": "ok", "title": "\u2067isolated"}, {"title": [ONE_LINE]}),
        ({"name": "ok", "title": "two\nlines"}, {"title": [ONE_LINE]}),
        ({"name": "ok", "title": "bell\x07"}, {"title": [ONE_LINE]}),
        ({"name": "ok", "title": "line one\u2028line two"}, {"title": [ONE_LINE]}),
        ({"name": "ok", "title": "\u2029"}, {"title": [ONE_LINE]}),
        ({"name": "ok", "title": "nul\x00"}, {"title": [ONE_LINE]}),
        (
            {"name": "ok", "title": "e" + "\u0301" * 9},
            {"title": ["Use at most 8 accents or other combining marks on one character."]},
        ),
        ({"title": "no name"}, {"name": ["This field is required."]}),
        (["general"], {"non_field_errors": ["Expected a JSON object."]}),
    ],
)
def test_bad_room_is_refused_naming_the_field(auth_client, body, errors):
    before = Room.objects.count()
    response = auth_client.post("/rooms", body, format="json")
    assert (response.status_code, response.json()) == (400, errors)
    assert Room.objects.count() == before


def test_creating_a_room_needs_a_token(api_client, db):
    response = api_client.post("/rooms", {"name": "nope"}, format="json")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"


def test_rooms_and_messages_share_the_send_rate(auth_client, settings):
    settings.CHAT_MESSAGE_RATE = "2/10s"
    assert auth_client.post("/messages/general", {"content": "hi"}, format="json").status_code == 201
    assert auth_client.post("/rooms", {"name": "one"}, format="json").status_code == 201
    refused = auth_client.post("/rooms", {"name": "two"}, format="json")
    assert refused.status_code == 429
    assert refused.json() == {
        "detail": "Too many requests; try again later.",
        "retry_after": refused.json()["retry_after"],
    }
    assert not Room.objects.filter(name="two").exists()
    assert auth_client.post("/messages/general", {"content": "again"}, format="json").status_code == 429


def test_each_user_creates_at_most_room_create_rate_rooms(auth_client, settings):
    settings.ROOM_CREATE_RATE = "2/h"
    assert [auth_client.post("/rooms", {"name": name}, format="json").status_code for name in "ab"] == [201, 201]

    refused = auth_client.post("/rooms", {"name": "c"}, format="json")

    body = refused.json()
    assert (refused.status_code, body) == (
        429,
        {"detail": "Too many requests; try again later.", "retry_after": body["retry_after"]},
    )
    assert 0 < body["retry_after"] <= 3600 and refused["Retry-After"] == str(body["retry_after"])
    assert not Room.objects.filter(name="c").exists()
    assert auth_client.post("/messages/general", {"content": "still chatting"}, format="json").status_code == 201
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Bearer {token_pair_issue(user=UserFactory()).access_token}")
    assert other.post("/rooms", {"name": "c"}, format="json").status_code == 201  # per user


def test_a_creation_the_room_limit_refuses_leaves_the_message_slots_alone(auth_client, settings):
    settings.ROOM_CREATE_RATE = "1/h"
    settings.CHAT_MESSAGE_RATE = "3/h"
    assert auth_client.post("/rooms", {"name": "one"}, format="json").status_code == 201  # a message slot
    statuses = [auth_client.post("/rooms", {"name": f"more{n}"}, format="json").status_code for n in range(5)]

    assert statuses == [429] * 5
    sends = [auth_client.post("/messages/general", {"content": str(n)}, format="json").status_code for n in range(3)]
    assert sends == [201, 201, 429]


def test_listing_rooms_ignores_a_stale_token(api_client, db):
    api_client.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")
    assert api_client.get("/rooms").status_code == 200
