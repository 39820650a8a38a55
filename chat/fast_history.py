"""GET /messages/<room> answered below Django's request handling, for the plain request.

The history page is the API's hottest read: a client that reconnects, a bot that polls, a page that
scrolls back. Through Django's handler and DRF it cost 7-8 ms of server CPU on the benchmark machine,
most of it request handling around a view whose own work is under 1 ms (docs/performance.md, "Levers").

Here a request that is plainly well-formed is answered by the parts the view uses, without the
machinery around them, on the same request threads: SimpleJWT's access-token check
(`BearerAuthentication`, the class DRF runs), `selectors.message_list` and
`events.message_payload_from_row`, with the request id and the `chat.http` log line of
`chatproject.middleware`. Three parts are its own, each checked against Django's by the tests: the
room and the user's `is_active` read in one query (`room_for_active_user`), the JSON encoded by orjson
to the bytes DRF's `JSONRenderer` gives (`render`), and the headers Django's middleware adds
(`response_headers`). The query's bounds are read from `MessageListQuerySerializer`.

Everything else goes to Django untouched, before anything of the request is read, and is answered
there exactly as before, errors included: another method or path, a missing or bad token, an inactive
or deleted user, an unknown room, a query parameter that is not one of limit / skip / before / after
written as plain digits within its bounds, a repeated parameter, an Accept header other than
`application/json` or `*/*`, a body, a host not in ALLOWED_HOSTS, a plain-HTTP request where HTTPS is
required, and any exception on the way. So the contract has one implementation, Django's, and this
path is a cache of its answer for the common case; `chat/tests/test_fast_history.py` compares the two
answers, status, headers and body, for every kind of request.
"""

import asyncio
import logging
import re
import time
from concurrent.futures import Executor
from dataclasses import dataclass

import orjson
from django.conf import settings
from django.db import close_old_connections, reset_queries
from django.http.request import split_domain_port, validate_host
from rest_framework_simplejwt.settings import api_settings as jwt_settings

from accounts.authentication import BearerAuthentication
from accounts.models import User
from chat import selectors, sql
from chat.events import message_payload_from_row
from chat.models import Room
from chat.serializers import MessageListQuerySerializer
from chatproject.logs import log_context
from chatproject.middleware import REQUEST_ID_HEADER, log_answer, request_id_from
from chatproject.security import CONTENT_SECURITY_POLICY

logger = logging.getLogger("chat.http")

PREFIX = "/messages/"
# limit=50&before=1234: names from the serializer, values plain digits (no sign, space or decimal point).
_PARAMETER = re.compile(rb"([a-z]+)=([0-9]{1,19})")
_ACCEPTED = frozenset({b"", b"*/*", b"application/json"})


def _bounds() -> dict[str, tuple[int, int]]:
    fields = MessageListQuerySerializer().fields
    return {name: (field.min_value, field.max_value) for name, field in fields.items()}


def query_arguments(query: bytes, bounds: dict[str, tuple[int, int]]) -> dict[str, int] | None:
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
        if not low <= value <= high:
            return None
        arguments[name] = value
    return arguments


def _header_values(scope) -> dict[bytes, bytes]:
    """Header values by lower-case name, repeats joined with a comma (as Django's ASGIRequest does)."""
    values: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        name = name.lower()
        values[name] = values[name] + b"," + value if name in values else value
    return values


def is_secure(scope, headers: dict[bytes, bytes]) -> bool:
    """HttpRequest.is_secure() for this scope: SECURE_PROXY_SSL_HEADER when set, else the scheme."""
    if settings.SECURE_PROXY_SSL_HEADER:
        meta_name, secure_value = settings.SECURE_PROXY_SSL_HEADER
        name = meta_name.removeprefix("HTTP_").replace("_", "-").lower().encode("latin-1")
        if name in headers:
            return headers[name].decode("latin-1").split(",", 1)[0].strip() == secure_value
    return scope.get("scheme") == "https"


def response_headers(*, secure: bool) -> list[tuple[bytes, bytes]]:
    """The headers Django and DRF give a 200 answer of the history view, in their order, less
    Content-Length and the request id (SecurityMiddleware, XFrameOptionsMiddleware,
    ContentSecurityPolicyMiddleware, DRF's Allow)."""
    headers = [("Content-Type", "application/json"), ("Allow", "GET, POST, HEAD, OPTIONS")]
    if settings.X_FRAME_OPTIONS:
        headers.append(("X-Frame-Options", settings.X_FRAME_OPTIONS.upper()))
    if secure and settings.SECURE_HSTS_SECONDS:
        value = f"max-age={settings.SECURE_HSTS_SECONDS}"
        if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
            value += "; includeSubDomains"
        if settings.SECURE_HSTS_PRELOAD:
            value += "; preload"
        headers.append(("Strict-Transport-Security", value))
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        headers.append(("X-Content-Type-Options", "nosniff"))
    policy = settings.SECURE_REFERRER_POLICY
    if policy:
        values = policy.split(",") if isinstance(policy, str) else policy
        headers.append(("Referrer-Policy", ",".join(value.strip() for value in values)))
    if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
        headers.append(("Cross-Origin-Opener-Policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY))
    headers.append(("Content-Security-Policy", CONTENT_SECURITY_POLICY))
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]


def room_for_active_user(*, name: str, user_id: int) -> Room | None:
    """The room (id and name only) when it exists and the user is active, in one query: what
    `BearerAuthentication.get_user` and `selectors.room_get` check, read without building querysets."""
    found = sql.rows(
        f"SELECT (SELECT id FROM {sql.table(Room)} WHERE name = %s), "
        f"(SELECT is_active FROM {sql.table(User)} WHERE id = %s)",
        [name, user_id],
    )
    room_id, active = found[0]
    if room_id is None or not active:
        return None
    return Room(id=room_id, name=name)


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
    started: float


class FastHistory:
    """ASGI middleware in front of Django's HTTP application (chatproject/asgi.py)."""

    def __init__(self, app, *, threads: Executor):
        self.app = app
        self.threads = threads
        self.bounds = _bounds()
        self.authentication = BearerAuthentication()
        self.headers = {secure: response_headers(secure=secure) for secure in (False, True)}
        # room_for_active_user reads the user by id and checks is_active, as get_user does under
        # these settings; a revocation check on the password (CHECK_REVOKE_TOKEN) leaves it to Django.
        self.enabled = jwt_settings.USER_ID_FIELD == "id" and not jwt_settings.CHECK_REVOKE_TOKEN

    async def __call__(self, scope, receive, send):
        plan = self.plan(scope) if scope["type"] == "http" and self.enabled else None
        if plan is not None:
            answer = await asyncio.get_running_loop().run_in_executor(self.threads, self.answer, plan)
            if answer is not None:
                await self.send(send, plan, *answer)
                return
        await self.app(scope, receive, send)

    def plan(self, scope) -> Plan | None:
        """The request's parts when it is one this path answers as Django would; None otherwise."""
        started = time.perf_counter()
        path = scope["path"]
        if scope["method"] != "GET" or not path.startswith(PREFIX) or scope.get("root_path"):
            return None
        room = path[len(PREFIX) :]
        if not room or "/" in room or settings.FORCE_SCRIPT_NAME or settings.USE_X_FORWARDED_HOST:
            return None
        headers = _header_values(scope)
        if b"content-length" in headers or b"transfer-encoding" in headers:
            return None
        if headers.get(b"accept", b"").strip() not in _ACCEPTED:
            return None
        domain, _ = split_domain_port(headers.get(b"host", b"").decode("latin-1"))
        if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
            return None
        secure = is_secure(scope, headers)
        if settings.SECURE_SSL_REDIRECT and not secure:
            return None
        parts = headers.get(b"authorization", b"").split()
        if len(parts) != 2 or parts[0] != b"Bearer":
            return None
        arguments = query_arguments(scope.get("query_string", b""), self.bounds)
        if arguments is None:
            return None
        request_id = request_id_from(headers.get(REQUEST_ID_HEADER.lower().encode(), b"").decode("latin-1"))
        return Plan(room, parts[1], arguments, secure, request_id, started)

    def answer(self, plan: Plan) -> tuple[int, bytes] | None:
        """On a request thread: (user id, body) of the page, or None when Django must answer."""
        reset_queries()
        close_old_connections()
        try:
            with log_context(request_id=plan.request_id):
                return self._page(plan)
        except Exception:  # a bad token, a database error: Django answers, and logs what it meets
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

    async def send(self, send, plan: Plan, user_id: int, body: bytes) -> None:
        headers = [
            *self.headers[plan.secure],
            (b"Content-Length", str(len(body)).encode()),
            (REQUEST_ID_HEADER.encode(), plan.request_id.encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        with log_context(request_id=plan.request_id, user_id=user_id):
            log_answer("GET", PREFIX + plan.room, 200, plan.started)
