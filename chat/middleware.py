"""WebSocket handshake checks: the browser origin, then the access token in the query string."""

import logging
import uuid
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.security.websocket import OriginValidator
from django.conf import settings

from accounts.tokens import AccessClaims, InvalidToken, access_token_user
from chat.logs import log_ws
from chatproject.logs import log_context

CLOSE_UNAUTHENTICATED = 4001  # the room consumer closes with it when scope["user"] is None


class OriginCheck(OriginValidator):
    """ALLOWED_HOSTS origin check that lets clients without an Origin header (non-browsers) through."""

    def __init__(self, application):
        super().__init__(application, settings.ALLOWED_HOSTS)

    def valid_origin(self, parsed_origin) -> bool:
        if parsed_origin is None:
            return True
        return self.validate_origin(parsed_origin)


@database_sync_to_async
def _claims(raw_token: str) -> tuple[AccessClaims | None, str | None]:
    """Return (claims, None) for an accepted token, else (None, why it was refused)."""
    try:
        return access_token_user(raw_token), None
    except InvalidToken as exc:
        # SimpleJWT's and accounts.tokens' fixed sentences ("Token is expired", "User not found or
        # inactive"): they classify the refusal and never quote the token.
        return None, str(exc)


class JWTQueryStringAuthMiddleware:
    """Put the user named by `?token=` in scope["user"] (None when the token is not accepted).

    The consumer, not the middleware, refuses: it accepts and closes with 4001 so that
    browsers can read the code. Every socket gets a scope["connection_id"], bound to each log
    record of the connection together with its user_id.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        query = parse_qs(scope.get("query_string", b"").decode("latin1"))
        raw = (query.get("token") or [""])[0]
        claims, refusal = await _claims(raw) if raw else (None, "Token missing")
        scope = dict(
            scope,
            user=claims.user if claims else None,
            token_expires_at=claims.expires_at if claims else None,
            connection_id=uuid.uuid4().hex,
        )
        with log_context(connection_id=scope["connection_id"], user_id=claims.user.pk if claims else None):
            if refusal:
                log_ws(scope, "ws.auth_refused", logging.WARNING, code=CLOSE_UNAUTHENTICATED, reason=refusal)
            return await self.app(scope, receive, send)
