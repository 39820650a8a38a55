"""WebSocket handshake checks: the browser origin, then the access token in the query string."""

from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.security.websocket import OriginValidator
from django.conf import settings

from accounts.tokens import InvalidToken, access_token_user


class OriginCheck(OriginValidator):
    """ALLOWED_HOSTS origin check that lets clients without an Origin header (non-browsers) through."""

    def __init__(self, application):
        super().__init__(application, settings.ALLOWED_HOSTS)

    def valid_origin(self, parsed_origin) -> bool:
        if parsed_origin is None:
            return True
        return self.validate_origin(parsed_origin)


@database_sync_to_async
def _claims(raw_token: str):
    try:
        return access_token_user(raw_token)
    except InvalidToken:
        return None


class JWTQueryStringAuthMiddleware:
    """Put the user named by `?token=` in scope["user"] (None when the token is not accepted).

    The consumer, not the middleware, refuses: it accepts and closes with 4001 so that
    browsers can read the code.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        query = parse_qs(scope.get("query_string", b"").decode("latin1"))
        raw = (query.get("token") or [""])[0]
        claims = await _claims(raw) if raw else None
        scope = dict(
            scope, user=claims.user if claims else None, token_expires_at=claims.expires_at if claims else None
        )
        return await self.app(scope, receive, send)
