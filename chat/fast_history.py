"""GET /messages/<room> answered below Django's request handling, for the plain request.

The history page is the API's hottest read: a client that reconnects, a bot that polls, a page that
scrolls back. Through Django's handler and DRF it cost about 8 ms of server CPU on the benchmark
machine, most of it request handling around a view whose own work is under 1 ms (docs/performance.md,
"Levers").

Here a request that is plainly well-formed is answered by the parts the view uses, without the
machinery around them, on the same request threads: SimpleJWT's access-token check
(`BearerAuthentication`, the class DRF runs), `selectors.message_list` and
`events.message_payload_from_row`, with the request id and the `chat.http` log line of
`chatproject.middleware`. The rest is this module's own, and each part is checked against Django by
the tests: which requests it takes (`plan`, `query_arguments`, `cookies_left_alone`, `is_secure`),
the room and the user's `is_active` in one query (`room_for_active_user`), the JSON encoded by orjson
to the bytes DRF's `JSONRenderer` gives (`render`), and the headers the middleware chain adds
(`response_headers`). The query's bounds and defaults are read from `MessageListQuerySerializer`.

Everything else goes to Django untouched, and is answered there exactly as before, errors included:
another method or path, a missing or bad token, an inactive or deleted user, an unknown room, a query
parameter that is not one of limit / skip / before / after written as plain digits within its bounds,
a repeated parameter, an Accept header other than `application/json` or `*/*`, a body or a
Content-Type, a session or CSRF cookie Django would delete or replace, a host not in ALLOWED_HOSTS, a
plain-HTTP request where HTTPS is required, and any exception on the way. Only the headers are read
before that decision; a request passed on after the token check or the query has cost those twice.
After a failure to reach the database the path stands aside for a few seconds, so that requests
arriving meanwhile wait for a pooled connection once, in Django. Settings the path does not follow
(`applicable`) turn it off, with a warning at start.

So the contract has one implementation, Django's, and this path is a cache of its answer for the
common case: `chat/tests/test_fast_history.py` compares the two answers, status, headers (in order)
and body bytes, for every kind of request, and `tests/test_server_http.py` on real server processes.
"""

import asyncio
import contextlib
import logging
import re
import time
from concurrent.futures import Executor
from dataclasses import dataclass

import orjson
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, reset_queries
from django.http.cookie import parse_cookie
from django.http.request import split_domain_port, validate_host
from django.middleware.csrf import InvalidTokenFormat, _check_token_format  # private in Django 5.2
from rest_framework.fields import SkipField
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework_simplejwt.settings import api_settings as jwt_settings

from accounts.authentication import BearerAuthentication, header_schemes
from accounts.models import User
from chat import selectors, sql
from chat.events import message_payload_from_row
from chat.models import ROOM_NAME, Room
from chat.serializers import MessageListQuerySerializer
from chat.views import MessagesView
from chatproject.logs import log_context
from chatproject.middleware import REQUEST_ID_HEADER, log_answer, request_id_from
from chatproject.security import CONTENT_SECURITY_POLICY

logger = logging.getLogger("chat.http")

PREFIX = "/messages/"
# limit=50&before=1234: names from the serializer, values plain digits (no sign, space or decimal point).
_PARAMETER = re.compile(rb"([a-z]+)=([0-9]{1,19})")
_ACCEPTED = frozenset({b"*/*", b"application/json"})
DATABASE_PAUSE_SECONDS = 5.0
# The chain `response_headers` follows (chatproject/settings.py): another one turns the path off.
MIDDLEWARE_FOLLOWED = [
    "chatproject.middleware.RequestLogMiddleware",
    "chatproject.errors.JsonErrorMiddleware",
    "chatproject.security.ContentSecurityPolicyMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]


def applicable() -> bool:
    """Whether Django's answer depends only on what this path reads, under the running settings."""
    view = MessagesView
    return (
        jwt_settings.USER_ID_FIELD == "id"  # room_for_active_user reads the user by id
        and not jwt_settings.CHECK_REVOKE_TOKEN  # a check on the password hash: Django's
        and jwt_settings.AUTH_HEADER_NAME == "HTTP_AUTHORIZATION"
        and list(view.authentication_classes) == [BearerAuthentication]
        and list(view.permission_classes) == [IsAuthenticated]
        and not view.throttle_classes
        and list(view.renderer_classes) == [JSONRenderer]
        and view.content_negotiation_class is DefaultContentNegotiation
        and view.versioning_class is None
        and not JSONRenderer.ensure_ascii
        and JSONRenderer.compact  # render: compact UTF-8, as orjson writes
        and list(settings.MIDDLEWARE) == MIDDLEWARE_FOLLOWED
        and not settings.SESSION_SAVE_EVERY_REQUEST
        and not settings.CSRF_USE_SESSIONS
        and not settings.FORCE_SCRIPT_NAME
        and not settings.USE_X_FORWARDED_HOST
        and not settings.DISALLOWED_USER_AGENTS
        and not settings.PREPEND_WWW
    )


def query_rules() -> tuple[dict[str, tuple[int | None, int | None]], dict[str, int]]:
    """The serializer's parameters with their bounds, and the defaults Django's view passes when one
    is absent (limit, skip)."""
    bounds, defaults = {}, {}
    for name, field in MessageListQuerySerializer().fields.items():
        bounds[name] = (field.min_value, field.max_value)
        with contextlib.suppress(SkipField):  # no default: absent means absent
            defaults[name] = field.get_default()
    return bounds, defaults


def query_arguments(query: bytes, bounds: dict[str, tuple[int | None, int | None]]) -> dict[str, int] | None:
    """The page's arguments when the query string is plainly valid, else None (Django decides)."""
    arguments: dict[str, int] = {}
    if not query:
        return arguments
    for part in query.split(b"&"):
        match = _PARAMETER.fullmatch(part)
        if match is None:
            return None
        name, value = match.group(1).decode(), int(match.group(2))
        if name not in bounds or name in arguments:
            return None
        low, high = bounds[name]
        if (low is not None and value < low) or (high is not None and value > high):
            return None
        arguments[name] = value
    return arguments


def _header_values(scope) -> dict[bytes, bytes]:
    """Header values by lower-case name, repeats joined with a comma and names with an underscore
    left out (as Django's ASGIRequest does)."""
    values: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        name = name.lower()
        if b"_" in name:
            continue
        values[name] = values[name] + b"," + value if name in values else value
    return values


def cookies_left_alone(header: bytes | None) -> bool:
    """True when Django's session and CSRF middleware would add no Set-Cookie (nor Vary) for these
    cookies: no session cookie or a well-formed one, no CSRF cookie or a well-formed one (with
    SESSION_SAVE_EVERY_REQUEST and CSRF_USE_SESSIONS off, which `applicable` requires)."""
    if header is None:
        return True
    cookies = parse_cookie(header.decode("latin-1"))
    session_key = cookies.get(settings.SESSION_COOKIE_NAME)
    if session_key is not None and len(session_key) < 8:  # SessionBase._validate_session_key
        return False
    csrf_secret = cookies.get(settings.CSRF_COOKIE_NAME)
    if csrf_secret is not None:
        try:
            _check_token_format(csrf_secret)
        except InvalidTokenFormat:
            return False
    return True


def is_secure(scope, headers: dict[bytes, bytes]) -> bool:
    """HttpRequest.is_secure() for this scope: SECURE_PROXY_SSL_HEADER when set, else the scheme."""
    if settings.SECURE_PROXY_SSL_HEADER:
        meta_name, secure_value = settings.SECURE_PROXY_SSL_HEADER
        if not meta_name.startswith("HTTP_"):  # not a header's META name: no request carries it
            return scope.get("scheme") == "https"
        name = meta_name.removeprefix("HTTP_").replace("_", "-").lower().encode("latin-1")
        if name in headers:
            return headers[name].decode("latin-1").split(",", 1)[0].strip() == secure_value
    return scope.get("scheme") == "https"


def response_headers(*, secure: bool) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]:
    """The headers Django and DRF give a 200 answer of the history view, in their order, as the
    parts before and after Content-Length (the request id comes last): DRF's Content-Type and Allow,
    XFrameOptionsMiddleware, CommonMiddleware's Content-Length, SecurityMiddleware,
    ContentSecurityPolicyMiddleware."""
    view = MessagesView()
    view.setup(None)  # as as_view() does per request: HEAD answers as GET
    allow = ", ".join(view.allowed_methods)
    before = [
        ("Content-Type", "application/json"),
        ("Allow", allow),
        ("X-Frame-Options", settings.X_FRAME_OPTIONS.upper()),
    ]
    after = []
    if secure and settings.SECURE_HSTS_SECONDS:
        value = f"max-age={settings.SECURE_HSTS_SECONDS}"
        if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
            value += "; includeSubDomains"
        if settings.SECURE_HSTS_PRELOAD:
            value += "; preload"
        after.append(("Strict-Transport-Security", value))
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        after.append(("X-Content-Type-Options", "nosniff"))
    policy = settings.SECURE_REFERRER_POLICY
    if policy:
        values = [value.strip() for value in policy.split(",")] if isinstance(policy, str) else policy
        after.append(("Referrer-Policy", ",".join(values)))
    if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
        after.append(("Cross-Origin-Opener-Policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY))
    after.append(("Content-Security-Policy", CONTENT_SECURITY_POLICY))

    def encoded(headers):
        return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]

    return encoded(before), encoded(after)


def room_for_active_user(*, name: str, user_id: int) -> Room | None:
    """The room (id and stored name) when it exists and the user is active, in one query: what
    `BearerAuthentication.get_user` and `selectors.room_get` check, read without building querysets."""
    if not ROOM_NAME.fullmatch(name):
        return None
    found = sql.rows(
        f"SELECT r.id, r.name, u.is_active FROM {sql.table(Room)} r, {sql.table(User)} u "
        "WHERE r.name = %s AND u.id = %s",
        [name, user_id],
    )
    if not found or not found[0][2]:
        return None
    return Room(id=found[0][0], name=found[0][1])


def render(data) -> bytes:
    """JSONRenderer's bytes for `data` (compact, UTF-8, U+2028 and U+2029 escaped), a tenth of its time.

    A string orjson refuses (a lone surrogate) raises, and Django answers the request."""
    return orjson.dumps(data).replace(b"\xe2\x80\xa8", b"\\u2028").replace(b"\xe2\x80\xa9", b"\\u2029")


@dataclass(frozen=True, slots=True)
class Plan:
    """What the event loop read off a plain request; a request thread does the rest."""

    room: str
    token: bytes
    arguments: dict[str, int]
    secure: bool
    request_id: str


class FastHistory:
    """ASGI middleware in front of Django's HTTP application (chatproject/asgi.py)."""

    def __init__(self, app, *, threads: Executor):
        self.app = app
        self.threads = threads
        self.enabled = applicable()
        if not self.enabled:
            logger.warning("history fast path off: settings it does not follow (chat.fast_history.applicable)")
        self.bounds, self.defaults = query_rules()
        self.authentication = BearerAuthentication()
        self.auth_types = set(header_schemes())  # lower-cased
        self.headers = {secure: response_headers(secure=secure) for secure in (False, True)}
        self.paused_until = 0.0  # after a failure to reach the database, Django answers for a while

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and self.enabled and scope["path"].startswith(PREFIX):
            try:
                plan = self.plan(scope)
                page = None
                if plan is not None:
                    page = await asyncio.get_running_loop().run_in_executor(self.threads, self.answer, plan)
            except Exception:
                logger.debug("history fast path: request not read", exc_info=True)
                page = None
            if page is not None:
                await self.send(send, plan, page)
                return
            logger.debug("history fast path: passed on")
        await self.app(scope, receive, send)

    def plan(self, scope) -> Plan | None:
        """The request's parts when it is one this path answers as Django would; None otherwise."""
        room = scope["path"][len(PREFIX) :]
        if scope["method"] != "GET" or not room or "/" in room or scope.get("root_path"):
            return None
        if time.monotonic() < self.paused_until:
            return None
        headers = _header_values(scope)
        if b"content-length" in headers or b"transfer-encoding" in headers or b"content-type" in headers:
            return None
        accept = headers.get(b"accept")
        if accept is not None and accept.strip() not in _ACCEPTED:
            return None
        domain, _ = split_domain_port(headers.get(b"host", b"").decode("latin-1"))
        if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
            return None
        secure = is_secure(scope, headers)
        if settings.SECURE_SSL_REDIRECT and not secure:
            return None
        if not cookies_left_alone(headers.get(b"cookie")):
            return None
        parts = headers.get(b"authorization", b"").split()
        if len(parts) != 2 or parts[0].lower() not in self.auth_types:
            return None
        arguments = query_arguments(scope.get("query_string", b""), self.bounds)
        if arguments is None:
            return None
        request_id = request_id_from(headers.get(REQUEST_ID_HEADER.lower().encode(), b"").decode("latin-1"))
        return Plan(room, parts[1], {**self.defaults, **arguments}, secure, request_id)

    def answer(self, plan: Plan) -> tuple[int, bytes] | None:
        """On a request thread: the page's body (its log line written), or None when Django must answer."""
        if time.monotonic() < self.paused_until:  # queued before the database failed
            return None
        started = time.perf_counter()
        try:
            reset_queries()
            close_old_connections()
            with log_context(request_id=plan.request_id):
                page = self._page(plan)
            if page is None:
                return None
            with log_context(user_id=page[0], request_id=plan.request_id):  # as RequestLogMiddleware
                log_answer("GET", PREFIX + plan.room, 200, started)
            return page[1]
        except (OperationalError, InterfaceError):  # the database is unreachable, or the pool ran dry
            self.paused_until = time.monotonic() + DATABASE_PAUSE_SECONDS
            logger.debug("history fast path: database unavailable; Django answers for a while", exc_info=True)
            return None
        except Exception:  # a bad token, a string orjson refuses: Django answers, and logs what it meets
            logger.debug("history fast path: Django answers", exc_info=True)
            return None
        finally:
            close_old_connections()

    def _page(self, plan: Plan) -> tuple[int, bytes] | None:
        token = self.authentication.get_validated_token(plan.token)
        user_id = int(token[jwt_settings.USER_ID_CLAIM])
        room = room_for_active_user(name=plan.room, user_id=user_id)
        if room is None:
            return None
        rows = selectors.message_list(room=room, **plan.arguments)
        return user_id, render([message_payload_from_row(row, room.name) for row in rows])

    async def send(self, send, plan: Plan, body: bytes) -> None:
        before, after = self.headers[plan.secure]
        headers = [
            *before,
            (b"Content-Length", str(len(body)).encode()),
            *after,
            (REQUEST_ID_HEADER.encode(), plan.request_id.encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
