"""Single-use WebSocket tickets, so that access tokens stay out of URLs.

A ticket is a random string kept in Django's cache (Redis when there are several nodes) for
WS_TICKET_SECONDS, bound to one user and to the expiry of the access token that asked for it.
Redeeming deletes it; only the caller whose delete succeeded may use it.
"""

import secrets

from django.conf import settings
from django.core.cache import cache

from accounts.models import User
from accounts.tokens import AccessClaims, InvalidToken

_PREFIX = "ws-ticket:"


def ws_ticket_issue(*, user: User, access_expires_at: float) -> str:
    """Issue a ticket for the user's next WebSocket connection."""
    ticket = secrets.token_urlsafe(32)
    cache.set(_PREFIX + ticket, {"user_id": user.pk, "exp": access_expires_at}, settings.WS_TICKET_SECONDS)
    return ticket


def ws_ticket_redeem(ticket: str) -> AccessClaims:
    """Use a ticket once; InvalidToken when it is unknown, used, expired or its user inactive."""
    key = _PREFIX + ticket
    payload = cache.get(key)
    if payload is None or not cache.delete(key):
        raise InvalidToken("Ticket is invalid, used or expired")
    user = User.objects.filter(pk=payload["user_id"], is_active=True).first()
    if user is None:
        raise InvalidToken("User not found or inactive")
    return AccessClaims(user=user, expires_at=float(payload["exp"]))
