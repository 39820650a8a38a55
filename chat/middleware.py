"""WebSocket handshake checks: the browser origin, then the ticket or access token in the query string."""

import json
import logging
import uuid
from urllib.parse import parse_qs, urlparse

from channels.db import database_sync_to_async
from channels.security.websocket import OriginValidator, WebsocketDenier
from django.conf import settings

from accounts.tickets import ws_ticket_redeem
from accounts.tokens import AccessClaims, InvalidToken, access_token_user
from chat.logs import log_ws
from chatproject.logs import log_context
from chatproject.security import security_headers

CLOSE_UNAUTHENTICATED = 4001  # the room consumer closes with it when scope["user"] is None
AUTH_UNAVAILABLE = "Authentication unavailable"  # scope["auth_refusal"]: the consumer closes with 4500


ORIGIN_REFUSED = json.dumps({"detail": "Origin not allowed."}).encode()


class OriginCheck(OriginValidator):
    """ALLOWED_HOSTS origin check that lets clients without an Origin header (non-browsers) through.

    A refused handshake is logged (`ws.origin_refused`) and answered 403. Its body is JSON, like every
    other error, where the server lets the application write the response (ASGI's
    websocket.http.response extension: uvicorn); daphne sends its own empty 403.
    """

    def __init__(self, application):
        super().__init__(application, settings.ALLOWED_HOSTS)

    async def __call__(self, scope, receive, send):
        try:
            allowed = self.valid_origin(_origin(scope))
        except ValueError:  # an Origin that is no URL at all (http://[): refused, not a crash
            allowed = False
        if allowed:
            return await self.application(scope, receive, send)
        log_ws(scope, "ws.origin_refused", logging.WARNING, status=403)
        if "websocket.http.response" not in scope.get("extensions", {}):
            return await WebsocketDenier()(scope, receive, send)
        await receive()  # websocket.connect
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(ORIGIN_REFUSED)).encode()),
            *((name.lower().encode(), value.encode("latin-1")) for name, value in security_headers()),
        ]
        await send({"type": "websocket.http.response.start", "status": 403, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": ORIGIN_REFUSED})

    def valid_origin(self, parsed_origin) -> bool:
        if parsed_origin is None:
            return True
        return self.validate_origin(parsed_origin)


def _origin(scope):
    """The Origin header, parsed (None when absent); the last one counts, as in channels' validator.
    Raises ValueError for a value urlparse cannot take."""
    parsed = None
    for name, value in scope.get("headers", []):
        if name == b"origin":
            parsed = urlparse(value.decode("latin1"))
    return parsed


@database_sync_to_async
def _claims(query: dict) -> tuple[AccessClaims | None, str | None]:
    """Return (claims, None) for an accepted ticket or token, else (None, why it was refused)."""
    # A parameter given twice: the last, as Django reads a query string for the HTTP API.
    ticket = (query.get("ticket") or [""])[-1]
    token = (query.get("token") or [""])[-1]
    if not ticket and not token:
        return None, "Token missing"
    try:
        return (ws_ticket_redeem(ticket) if ticket else access_token_user(token)), None
    except InvalidToken as exc:
        # SimpleJWT's and accounts.tokens' fixed sentences ("Token is expired", "User not found or
        # inactive"): they classify the refusal and never quote the token.
        return None, str(exc)
    except Exception:
        # The database or cache is down: not the client's fault; the consumer closes with 4500.
        logging.getLogger("chat.ws").warning("ws auth could not be checked", exc_info=True)
        return None, AUTH_UNAVAILABLE


class JWTQueryStringAuthMiddleware:
    """Put the user named by `?ticket=` or `?token=` in scope["user"] (None when not accepted).

    The consumer, not the middleware, refuses: it accepts and closes with 4001 so that
    browsers can read the code. Every socket gets a scope["connection_id"], bound to each log
    record of the connection together with its user_id.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        query = parse_qs(scope.get("query_string", b"").decode("latin1"), keep_blank_values=True)
        claims, refusal = await _claims(query)
        scope = dict(
            scope,
            user=claims.user if claims else None,
            token_expires_at=claims.expires_at if claims else None,
            auth_refusal=refusal,
            connection_id=uuid.uuid4().hex,
        )
        with log_context(connection_id=scope["connection_id"], user_id=claims.user.pk if claims else None):
            if refusal:
                code = 4500 if refusal == AUTH_UNAVAILABLE else CLOSE_UNAUTHENTICATED
                log_ws(scope, "ws.auth_refused", logging.WARNING, code=code, reason=refusal)
            return await self.app(scope, receive, send)
