"""chat.fast_history: the plain GET /messages/<room> answered below Django, byte for byte as Django answers it.

Each request is sent twice, through the ASGI applications the server runs: once to Django's handler
alone (HISTORY_FAST_PATH off) and once to the fast path in front of it. The two answers must be equal
in status, headers (the request id aside, when the client sent none) and body; a recorder in front
of Django notes which requests the fast path passed on, so a fast path that answered nothing would fail.
"""

import json
import os
import random
import re
from datetime import timedelta

import pytest
from asgiref.testing import ApplicationCommunicator
from django.conf import settings as django_settings
from django.db import DataError, OperationalError
from rest_framework.renderers import JSONRenderer
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from accounts.tests.factories import UserFactory
from accounts.tokens import token_pair_issue
from chat.fast_history import FastHistory, render, room_for_active_user
from chat.serializers import MessageListQuerySerializer
from chat.tests.factories import RoomFactory, make_message
from chat.tests.processes import run_python
from chatproject.handler import PooledASGIHandler

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


class Recorder:
    """Django's application, noting the path of each request that reaches it."""

    def __init__(self, app):
        self.app = app
        self.paths: list[str] = []

    async def __call__(self, scope, receive, send):
        self.paths.append(scope["path"])
        await self.app(scope, receive, send)


class Servers:
    """Django alone, and the fast path in front of (a recorder in front of) Django."""

    def __init__(self):
        self.django = PooledASGIHandler()
        self.recorder = Recorder(self.django)
        self.fast = FastHistory(self.recorder, threads=self.django.threads)

    def close(self):
        self.django.threads.shutdown()


@pytest.fixture
def servers(settings):
    settings.HTTP_THREADS = 2
    built = []

    def build() -> Servers:  # after the test's settings: middleware and headers are read when built
        built.append(Servers())
        return built[-1]

    yield build
    for each in built:
        each.close()


async def call(app, path, *, query="", headers=(), method="GET", body=b"", scheme="http", host="localhost"):
    headers = [(b"host", host.encode()), *((name.lower().encode(), value.encode()) for name, value in headers)]
    if body:
        headers.append((b"content-length", str(len(body)).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": scheme,
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": headers,
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
    }
    communicator = ApplicationCommunicator(app, scope)
    await communicator.send_input({"type": "http.request", "body": body})
    start = await communicator.receive_output(10)
    content = b""
    while True:
        message = await communicator.receive_output(10)
        content += message.get("body", b"")
        if not message.get("more_body"):
            break
    answer_headers = [(name.decode(), value.decode()) for name, value in start["headers"]]
    return start["status"], answer_headers, content


async def both(servers: Servers, path: str, **request) -> tuple[tuple, tuple, bool]:
    """Django's answer, the fast path's answer, and whether the fast path passed the request on."""
    django = await call(servers.django, path, **request)
    before = len(servers.recorder.paths)
    fast = await call(servers.fast, path, **request)
    return django, fast, len(servers.recorder.paths) > before


def without_request_id(answer):
    """The answer with its headers in order, less the values made new for every request: the
    request id's, and a new CSRF cookie's value and expiry date (the two answers may straddle a
    second; that the date is there, and Max-Age, still have to match)."""

    def comparable(name: str, value: str) -> str:
        if name.lower() == "x-request-id":
            return ""
        if name.lower() == "set-cookie" and value.startswith("csrftoken="):
            attributes = [part.strip() for part in value.split(";")[1:]]
            kept = ["expires=…" if part.lower().startswith("expires=") else part for part in attributes]
            return "; ".join(["csrftoken=", *kept])
        return value

    status, headers, body = answer
    return status, [(name, comparable(name, value)) for name, value in headers], body


def test_answers_a_second_apart_compare_equal_and_a_different_cookie_lifetime_does_not():
    def answer(cookie: str):
        return 200, [("X-Request-ID", "r1"), ("Set-Cookie", cookie)], b"[]"

    at_18 = answer("csrftoken=a1; expires=Sat, 27 Nov 2027 15:36:18 GMT; Max-Age=31449600; Path=/; SameSite=Lax")
    at_19 = answer("csrftoken=b2; expires=Sat, 27 Nov 2027 15:36:19 GMT; Max-Age=31449600; Path=/; SameSite=Lax")
    shorter = answer("csrftoken=b2; expires=Sat, 27 Nov 2027 15:36:19 GMT; Max-Age=60; Path=/; SameSite=Lax")
    undated = answer("csrftoken=b2; Max-Age=31449600; Path=/; SameSite=Lax")

    assert without_request_id(at_18) == without_request_id(at_19)
    assert without_request_id(at_18) != without_request_id(shorter)
    assert without_request_id(at_18) != without_request_id(undated)


def header(answer, wanted: str) -> str:
    return next(value for name, value in answer[1] if name.lower() == wanted)


@pytest.fixture
def history(user):
    room = RoomFactory(name="general")
    for content in ["hello", 'quote " and \\ backslash', "line\nbreak\ttab", "emoji \U0001f600 é", "sep \u2028 \u2029"]:
        make_message(room=room, user=user, content=content)
    make_message(room=room, user=UserFactory(username="bob"), content="with id", client_id="c-1")
    for n in range(6):
        make_message(room=room, user=user, content=f"message {n}")
    RoomFactory(name="empty")
    return room


@pytest.fixture
def auth(user) -> tuple[str, str]:
    return ("Authorization", f"Bearer {token_pair_issue(user=user).access_token}")


ANSWERED_FAST = [
    ("/messages/general", ""),
    ("/messages/general", "limit=5"),
    ("/messages/general", "skip=2&limit=3"),
    ("/messages/general", "before=4"),
    ("/messages/general", "after=2"),
    ("/messages/general", "after=0&limit=100"),
    ("/messages/general", "limit=3&before=9&skip=1"),
    ("/messages/general", "before=0"),
    ("/messages/general", "limit=1&skip=1000"),
    ("/messages/empty", ""),
]


@pytest.mark.parametrize(("path", "query"), ANSWERED_FAST)
async def test_a_plain_request_is_answered_fast_exactly_as_django_answers_it(servers, history, auth, path, query):
    django, fast, passed_on = await both(servers(), path, query=query, headers=[auth])

    assert not passed_on
    assert django[0] == 200
    assert without_request_id(fast) == without_request_id(django)
    assert len(header(fast, "x-request-id")) == 32


FAST_REQUESTS = {
    "accept */*": {"headers": [("Accept", "*/*")]},
    "accept json": {"headers": [("Accept", " application/json ")]},
    "host with a port": {"host": "localhost:8000"},
    "well-formed cookies": {"headers": [("Cookie", f"csrftoken={'a1' * 16}; sessionid={'s' * 32}; theme=dark")]},
}


@pytest.mark.parametrize("name", FAST_REQUESTS)
async def test_these_requests_are_answered_fast_too(servers, history, auth, name):
    extra = dict(FAST_REQUESTS[name])
    headers = [auth, *extra.pop("headers", [])]
    django, fast, passed_on = await both(servers(), "/messages/general", headers=headers, **extra)

    assert not passed_on
    assert django[0] == 200
    assert without_request_id(fast) == without_request_id(django)


@pytest.mark.parametrize("scheme", ["bearer", "BEARER"])
async def test_the_scheme_is_read_in_any_case_as_django_reads_it(servers, history, auth, scheme):
    name, value = auth
    django, fast, passed_on = await both(
        servers(), "/messages/general", headers=[(name, value.replace("Bearer", scheme))]
    )

    assert not passed_on
    assert django[0] == 200
    assert without_request_id(fast) == without_request_id(django)


async def test_the_callers_request_id_is_echoed(servers, history, auth):
    headers = [auth, ("X-Request-ID", "trace-42")]
    django, fast, passed_on = await both(servers(), "/messages/general", headers=headers)

    assert not passed_on
    assert fast == django
    assert header(fast, "x-request-id") == "trace-42"


async def test_a_header_named_with_an_underscore_is_ignored_as_django_ignores_it(servers, history, auth):
    django, fast, passed_on = await both(servers(), "/messages/general", headers=[auth, ("X_Request_ID", "trace-1")])

    assert not passed_on
    assert without_request_id(fast) == without_request_id(django)
    assert header(fast, "x-request-id") != "trace-1"
    assert header(django, "x-request-id") != "trace-1"


async def test_the_serializers_defaults_are_the_fast_paths(servers, history, auth, monkeypatch):
    # Each serializer builds its fields afresh from the declared ones' arguments.
    monkeypatch.setitem(MessageListQuerySerializer._declared_fields["limit"]._kwargs, "default", 3)
    django, fast, passed_on = await both(servers(), "/messages/general", headers=[auth])

    assert not passed_on
    assert without_request_id(fast) == without_request_id(django)
    assert len(json.loads(fast[2])) == 3


def expired_token(user) -> str:
    token = AccessToken.for_user(user)
    token.set_exp(lifetime=-timedelta(seconds=1))
    return str(token)


@pytest.fixture
def bad_authorizations(user) -> dict[str, str]:
    inactive = UserFactory(username="inactive", is_active=False)
    gone = UserFactory(username="gone")
    gone_token = token_pair_issue(user=gone).access_token
    gone.delete()
    good = token_pair_issue(user=user).access_token
    return {
        "none": "",
        "scheme only": "Bearer",
        "other scheme": f"Token {good}",
        "three parts": f"Bearer {good} extra",
        "tampered": f"Bearer {good[:-2]}xx",
        "expired": f"Bearer {expired_token(user)}",
        "refresh token": f"Bearer {RefreshToken.for_user(user)}",
        "inactive user": f"Bearer {token_pair_issue(user=inactive).access_token}",
        "deleted user": f"Bearer {gone_token}",
    }


async def test_every_bad_token_is_answered_by_django(servers, history, bad_authorizations):
    built = servers()
    for name, value in bad_authorizations.items():
        headers = [("Authorization", value)] if value else []
        django, fast, passed_on = await both(built, "/messages/general", headers=headers)

        assert passed_on, name
        assert django[0] == 401, name
        assert without_request_id(fast) == without_request_id(django), name


PASSED_ON = [
    ("/messages/nowhere", "", {}),
    ("/messages/general/", "", {}),
    ("/messages/", "", {}),
    ("/messages/general", "limit=0", {}),
    ("/messages/general", "limit=101", {}),
    ("/messages/general", "limit=abc", {}),
    ("/messages/general", "limit=5.0", {}),
    ("/messages/general", "limit=+5", {}),
    ("/messages/general", "limit=", {}),
    ("/messages/general", "limit", {}),
    ("/messages/general", "limit=5&limit=6", {}),
    ("/messages/general", "before=-1", {}),
    ("/messages/general", f"after={2**62 + 1}", {}),
    ("/messages/general", "skip=1000000001", {}),
    ("/messages/general", "format=json", {}),
    ("/messages/general", "limit=5&", {}),
    ("/messages/general", "", {"headers": [("Accept", "text/html")]}),
    ("/messages/general", "", {"headers": [("Accept", "")]}),
    ("/messages/general", "", {"headers": [("Content-Type", "application/json")]}),
    ("/messages/general", "", {"headers": [("Cookie", "csrftoken=abc")]}),
    ("/messages/general", "", {"headers": [("Cookie", "sessionid=")]}),
    ("/messages/general", "", {"headers": [("Cookie", "sessionid=short")]}),
    ("/messages/general", "", {"headers": [("Accept", "application/json; indent=4")]}),
    ("/messages/general", "", {"headers": [("Accept", "application/json, text/html")]}),
    ("/messages/general", "", {"host": "evil.example.com"}),
    ("/messages/general", "", {"method": "HEAD"}),
    ("/messages/general", "", {"method": "OPTIONS"}),
    ("/messages/general", "", {"body": b"{}"}),
]


@pytest.mark.parametrize(("path", "query", "extra"), PASSED_ON)
async def test_anything_else_is_answered_by_django(servers, history, auth, path, query, extra):
    extra = dict(extra)
    headers = [auth, *extra.pop("headers", [])]
    django, fast, passed_on = await both(servers(), path, query=query, headers=headers, **extra)

    assert passed_on
    assert without_request_id(fast) == without_request_id(django)


async def test_behind_a_tls_proxy_https_is_answered_fast_with_hsts_and_plain_http_is_redirected_by_django(
    servers, settings, history, auth
):
    settings.ALLOWED_HOSTS = ["chat.example.com"]
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 3600
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    settings.SECURE_HSTS_PRELOAD = True
    built = servers()
    request = {"host": "chat.example.com", "headers": [auth, ("X-Forwarded-Proto", "https")]}

    django, fast, passed_on = await both(built, "/messages/general", **request)
    assert not passed_on
    assert without_request_id(fast) == without_request_id(django)
    assert header(fast, "strict-transport-security") == "max-age=3600; includeSubDomains; preload"

    django, fast, passed_on = await both(built, "/messages/general", host="chat.example.com", headers=[auth])
    assert passed_on
    assert django[0] == 301
    assert without_request_id(fast) == without_request_id(django)

    spoofed = {"host": "chat.example.com", "headers": [auth, ("X-Forwarded-Proto", "http, https")]}
    django, fast, passed_on = await both(built, "/messages/general", **spoofed)
    assert passed_on
    assert without_request_id(fast) == without_request_id(django)


async def test_a_fast_answer_logs_the_line_django_logs(servers, history, user, auth, json_log):
    headers = [auth, ("X-Request-ID", "trace-7")]
    await both(servers(), "/messages/general", query="limit=2", headers=headers)

    django_line, fast_line = json_log.events("http.request")
    fields = ("level", "logger", "event", "method", "path", "status", "request_id", "user_id")
    assert {key: fast_line[key] for key in fields} == {key: django_line[key] for key in fields}
    assert fast_line["request_id"] == "trace-7"
    assert fast_line["user_id"] == user.pk


@pytest.mark.parametrize("name", ["general\x00", "\x00", "général", "a" * 51, ""])
def test_a_name_no_room_can_have_is_no_room_without_asking_the_database(name, django_assert_num_queries):
    user = UserFactory()
    with django_assert_num_queries(0):  # PostgreSQL would refuse the NUL: Django would then answer a 500
        assert room_for_active_user(name=name, user_id=user.pk) is None
    assert room_for_active_user(name="general", user_id=user.pk).name == "general"


def test_render_gives_the_bytes_of_drfs_json_renderer():
    rng = random.Random(7)
    ranges = [(0, 0x7F), (0x80, 0x7FF), (0x2020, 0x202F), (0x800, 0xD7FF), (0xE000, 0xFFFF), (0x10000, 0x10FFFF)]
    for _ in range(3000):
        text = "".join(chr(rng.randint(*rng.choice(ranges))) for _ in range(rng.randint(0, 16)))
        data = [{"id": rng.randint(0, 2**62), "content": text, "client_id": None, "user": {"username": text}}]

        assert render(data) == JSONRenderer().render(data), repr(text)


def test_a_string_render_cannot_encode_raises_so_django_answers():
    with pytest.raises(TypeError):
        render([{"content": "lone \ud800 surrogate"}])


async def test_after_a_database_failure_django_answers_for_a_while(servers, history, auth, monkeypatch):
    built = servers()
    calls = []

    def failing(**kwargs):
        calls.append(kwargs)
        raise OperationalError("the pool timed out")

    monkeypatch.setattr("chat.fast_history.room_for_active_user", failing)
    django, fast, passed_on = await both(built, "/messages/general", headers=[auth])
    assert passed_on and fast[0] == 200
    assert without_request_id(fast) == without_request_id(django)
    assert len(calls) == 1

    django, fast, passed_on = await both(built, "/messages/general", headers=[auth])
    assert passed_on
    assert without_request_id(fast) == without_request_id(django)
    assert len(calls) == 1  # not tried again meanwhile

    monkeypatch.undo()
    built.fast.paused_until = 0.0  # the pause is over
    _, _, passed_on = await both(built, "/messages/general", headers=[auth])
    assert not passed_on


async def test_an_error_of_one_request_does_not_pause_the_path(servers, history, auth, monkeypatch):
    built = servers()

    def failing(**kwargs):
        raise DataError("a string the database refuses")

    monkeypatch.setattr("chat.fast_history.room_for_active_user", failing)
    _, _, passed_on = await both(built, "/messages/general", headers=[auth])
    assert passed_on
    monkeypatch.undo()

    _, _, passed_on = await both(built, "/messages/general", headers=[auth])
    assert not passed_on


NOT_FOLLOWED = {
    "DISALLOWED_USER_AGENTS": [re.compile("bot")],
    "SESSION_SAVE_EVERY_REQUEST": True,
    "MIDDLEWARE": [*django_settings.MIDDLEWARE, "django.middleware.gzip.GZipMiddleware"],
    "CSRF_USE_SESSIONS": True,
    "PREPEND_WWW": True,
}


@pytest.mark.parametrize("name", NOT_FOLLOWED)
async def test_settings_the_fast_path_does_not_follow_turn_it_off(servers, settings, history, auth, caplog, name):
    setattr(settings, name, NOT_FOLLOWED[name])
    built = servers()

    assert not built.fast.enabled
    assert "history fast path off" in caplog.text
    _, _, passed_on = await both(built, "/messages/general", headers=[auth])
    assert passed_on


async def test_a_proxy_header_setting_that_names_no_header_is_read_as_django_reads_it(servers, settings, history, auth):
    settings.SECURE_PROXY_SSL_HEADER = ("X_FORWARDED_PROTO", "https")  # no HTTP_: never a request header
    settings.SECURE_SSL_REDIRECT = True
    built = servers()
    request = {"headers": [auth, ("X-Forwarded-Proto", "https")]}

    django, fast, passed_on = await both(built, "/messages/general", **request)
    assert passed_on
    assert django[0] == 301
    assert without_request_id(fast) == without_request_id(django)


@pytest.mark.parametrize("policy", ["same-origin, strict-origin", ["same-origin", " strict-origin"]])
async def test_a_referrer_policy_is_sent_as_django_sends_it(servers, settings, history, auth, policy):
    settings.SECURE_REFERRER_POLICY = policy
    django, fast, passed_on = await both(servers(), "/messages/general", headers=[auth])

    assert not passed_on
    assert without_request_id(fast) == without_request_id(django)


@pytest.mark.django_db(transaction=False)
@pytest.mark.parametrize(
    ("value", "expected"), [("false", "PooledASGIHandler"), ("true", "FastHistory"), (None, "FastHistory")]
)
def test_the_environment_switch_decides_whether_the_server_runs_the_fast_path(value, expected):
    """HISTORY_FAST_PATH is read when the ASGI module is imported, as the server imports it: in a process of its own."""
    env = {key: val for key, val in os.environ.items() if key != "HISTORY_FAST_PATH"}
    if value is not None:
        env["HISTORY_FAST_PATH"] = value
    code = "import chatproject.asgi as asgi; print(type(asgi.http_app).__name__)"

    result = run_python(code, env, check=True)

    assert result.stdout.split()[-1] == expected
