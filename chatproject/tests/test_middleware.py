"""chatproject.middleware: a request id per HTTP request, echoed and logged, and one line per request."""

import logging
import re

import pytest
from django.http import HttpResponse
from django.test import Client, RequestFactory
from django.utils.functional import SimpleLazyObject

from chat import views
from chatproject.middleware import RequestLogMiddleware, authenticated_user_id

HEX_ID = re.compile(r"[0-9a-f]{32}")


def request_lines(json_log) -> list[dict]:
    return [
        {key: value for key, value in line.items() if key not in ("time", "duration_ms")}
        for line in json_log.events("http.request")
    ]


@pytest.mark.django_db
def test_a_request_gets_an_id_that_is_echoed_and_logged_with_its_outcome(client, json_log):
    response = client.get("/rooms?limit=5")

    request_id = response.headers["X-Request-ID"]
    assert HEX_ID.fullmatch(request_id)
    assert request_lines(json_log) == [
        {
            "level": "INFO",
            "logger": "chat.http",
            "event": "http.request",
            "request_id": request_id,
            "method": "GET",
            "path": "/rooms",
            "status": 200,
        }
    ]
    assert isinstance(json_log.events("http.request")[0]["duration_ms"], float)


@pytest.mark.django_db
def test_a_valid_incoming_request_id_is_kept(client, json_log):
    response = client.get("/rooms", headers={"X-Request-ID": "edge-7f3a:42"})

    assert response.headers["X-Request-ID"] == "edge-7f3a:42"
    assert request_lines(json_log)[0]["request_id"] == "edge-7f3a:42"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "incoming",
    ["a" * 129, "has space", 'quote"d', "eyJhbGciOiJIUzI1NiJ9.eyJ1c2VyX2lkIjoxfQ.c2lnbmF0dXJl"],
    ids=["too-long", "space", "quote", "a-jwt"],
)
def test_an_unusable_incoming_request_id_is_replaced(client, json_log, incoming):
    response = client.get("/rooms", headers={"X-Request-ID": incoming})

    assert HEX_ID.fullmatch(response.headers["X-Request-ID"])
    assert incoming not in json_log.text()


def test_a_bearer_user_is_logged_by_id_and_the_token_never(auth_client, user, json_log):
    token = auth_client._credentials["HTTP_AUTHORIZATION"].removeprefix("Bearer ")

    response = auth_client.get(f"/users/me?token={token}")

    assert response.status_code == 200
    [line] = request_lines(json_log)
    assert (line["path"], line["status"], line["user_id"]) == ("/users/me", 200, user.pk)
    assert token not in json_log.text()
    assert token.rsplit(".", 1)[1] not in json_log.text()


@pytest.mark.django_db
def test_a_request_refused_for_its_token_has_no_user_id(client, json_log):
    response = client.get("/users/me", headers={"Authorization": "Bearer not-a-token"})

    assert response.status_code == 401
    assert "user_id" not in request_lines(json_log)[0]


@pytest.mark.django_db
def test_lines_logged_while_handling_a_request_carry_its_id(client, json_log, monkeypatch):
    def room_list():
        logging.getLogger("chat.selectors").info("listing rooms")
        return []

    monkeypatch.setattr(views.selectors, "room_list", room_list)

    response = client.get("/rooms")

    [inner] = json_log.events("listing rooms")
    assert inner["request_id"] == response.headers["X-Request-ID"]


@pytest.mark.django_db
def test_a_server_error_is_logged_at_error_level(json_log, monkeypatch):
    def room_list():
        raise RuntimeError("boom")

    monkeypatch.setattr(views.selectors, "room_list", room_list)

    response = Client(raise_request_exception=False).get("/rooms")

    assert response.status_code == 500
    assert [(line["level"], line["status"]) for line in json_log.events("http.request")] == [("ERROR", 500)]


async def test_the_async_path_binds_echoes_and_logs_too(json_log):
    async def view(request):
        logging.getLogger("chat.views").info("inside")
        return HttpResponse(status=204)

    middleware = RequestLogMiddleware(view)
    response = await middleware(RequestFactory().get("/rooms?token=secret", headers={"X-Request-ID": "req-1"}))

    assert response.headers["X-Request-ID"] == "req-1"
    inside, answered = json_log.lines()
    assert (inside["event"], inside["request_id"]) == ("inside", "req-1")
    assert (answered["event"], answered["path"], answered["status"]) == ("http.request", "/rooms", 204)
    assert "secret" not in json_log.text()


def test_a_session_user_nobody_asked_for_is_not_loaded_just_to_log_it():
    request = RequestFactory().get("/")
    request.user = SimpleLazyObject(lambda: pytest.fail("the session user was loaded"))

    assert authenticated_user_id(request) is None
