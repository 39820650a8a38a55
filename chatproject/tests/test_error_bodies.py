"""Every 4xx/5xx body is a small JSON object: no traceback, SQL, file path or setting, DEBUG on or off.

An unexpected exception is forced in a view in-process (the real middleware and handlers, DEBUG off
and on); the other errors are asked of real server processes, one with DEBUG off and one with it on,
because DEBUG changes what Django itself answers (its technical 404/500 pages).
"""

import json
import logging

import pytest
from django.test import Client

from chat import views
from tests.conftest import launch_server

# What a leak would look like: a traceback, a source path, SQL, settings.
LEAKS = ["traceback", 'file "', "/work/", "/usr/", "site-packages", "select ", "secret", "settings", "debug"]
INTERNAL_SERVER_ERROR = {"detail": "Internal server error."}
# A message such as a failing query would raise: every part of it is a leak if it reaches the body.
LEAKY_ERROR = 'SELECT "secret" FROM accounts_user; File "/work/main/chatproject/settings.py", line 1'


def assert_no_leak(body: bytes) -> None:
    text = body.decode(errors="replace").lower()
    assert [leak for leak in LEAKS if leak in text] == [], body


def break_room_list(monkeypatch) -> None:
    def room_list():
        raise RuntimeError(LEAKY_ERROR)

    monkeypatch.setattr(views.selectors, "room_list", room_list)


# --- an unexpected exception, in-process ---------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("debug", [False, True], ids=["debug-off", "debug-on"])
def test_an_unexpected_exception_answers_500_with_a_fixed_body_and_logs_it(monkeypatch, caplog, settings, debug):
    settings.DEBUG = debug
    break_room_list(monkeypatch)

    response = Client(raise_request_exception=False).get("/rooms")

    assert response.status_code == 500
    assert response.headers["Content-Type"] == "application/json"
    assert json.loads(response.content) == INTERNAL_SERVER_ERROR
    assert_no_leak(response.content)
    [logged] = [r for r in caplog.records if r.name == "django.request"]
    assert logged.levelno == logging.ERROR
    assert "/rooms" in logged.getMessage()
    assert logged.exc_info[0] is RuntimeError  # the traceback goes to the log, never to the client


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "path", "status", "detail"),
    [
        ("get", "/nowhere", 404, "Not found."),
        ("get", "/static/nowhere.js", 404, "Not found."),
        ("post", "/", 405, "Method not allowed."),
    ],
)
def test_djangos_own_error_pages_are_json_too_with_debug_on(settings, method, path, status, detail):
    settings.DEBUG = True  # Django would answer with its technical pages: URL patterns, settings

    response = getattr(Client(), method)(path)

    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    assert json.loads(response.content) == {"detail": detail}
    assert_no_leak(response.content)


@pytest.mark.django_db
def test_an_error_made_json_keeps_its_headers():
    response = Client().post("/", HTTP_X_REQUEST_ID="abc-123")  # a plain view's empty HTML 405

    assert response.status_code == 405
    assert json.loads(response.content) == {"detail": "Method not allowed."}
    assert response.headers["Allow"] == "GET, HEAD, OPTIONS"
    assert response.headers["X-Request-ID"] == "abc-123"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Content-Security-Policy"]


@pytest.mark.django_db
def test_drf_errors_pass_through_untouched(client):
    response = client.get("/users/me")

    assert response.status_code == 401
    assert response.json() == {"detail": "Authentication credentials were not provided."}
    assert response.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.django_db
def test_the_admins_errors_are_json_too_and_its_pages_stay_html(settings, admin_client):
    settings.DEBUG = True  # Django's technical 404 would list the URL patterns

    missing = admin_client.get("/admin/nowhere/")
    no_csrf = Client(enforce_csrf_checks=True).post("/admin/login/", {"username": "x", "password": "y"})
    page = admin_client.get("/admin/")

    assert (missing.status_code, missing.json()) == (404, {"detail": "Not found."})
    assert (no_csrf.status_code, no_csrf.json()) == (403, {"detail": "Permission denied."})
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")


# --- real server processes -------------------------------------------------------------------

# Each request earns one error from a different layer: URL resolver, Django view, DRF parser,
# authentication, content negotiation, CSRF, host validation, static files.
ERROR_REQUESTS = [
    pytest.param("GET", "/nowhere", {}, None, 404, id="unknown-path"),
    pytest.param("GET", "/static/nowhere.js", {}, None, 404, id="unknown-static-file"),
    pytest.param("GET", "/register", {}, None, 405, id="drf-wrong-method"),
    pytest.param("POST", "/", {}, None, 403, id="csrf-refused"),
    pytest.param("POST", "/register", {"Content-Type": "application/json"}, b'{"username": ', 400, id="malformed-json"),
    pytest.param("POST", "/register", {"Content-Type": "text/plain"}, b"hello", 415, id="unsupported-media-type"),
    pytest.param("GET", "/users/me", {}, None, 401, id="no-token"),
    pytest.param("GET", "/users/me", {"Authorization": "Bearer not.a.token"}, None, 401, id="bad-token"),
    pytest.param("GET", "/messages/nowhere", {"Authorization": "Bearer x"}, None, 401, id="bad-token-unknown-room"),
    pytest.param("GET", "/rooms", {"Host": "evil.example"}, None, 400, id="disallowed-host"),
    pytest.param("GET", "/healthz", {"Host": "bad host"}, None, 400, id="malformed-host"),
]


@pytest.fixture(scope="module", params=["0", "1"], ids=["debug-off", "debug-on"])
def any_debug_server(request, tmp_path_factory):
    with launch_server(tmp_path_factory.mktemp(f"debug-{request.param}"), DJANGO_DEBUG=request.param) as running:
        yield running


@pytest.mark.server
@pytest.mark.parametrize(("method", "path", "headers", "body", "status"), ERROR_REQUESTS)
def test_every_error_of_a_real_server_is_a_json_object_without_internals(
    any_debug_server, method, path, headers, body, status
):
    response = any_debug_server.request(method, path, raw_body=body, headers=headers)

    assert response.status == status, response.body
    assert response.content_type == "application/json", response.body
    payload = response.json()
    assert isinstance(payload, dict) and payload, payload
    assert all(isinstance(value, (str, list)) for value in payload.values()), payload
    assert_no_leak(response.body)
