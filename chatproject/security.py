"""The Content-Security-Policy header; Django's own middleware sends the other security headers.

Every script and style is a file served by the app (the web page, the admin, Swagger UI), so the
policy allows nothing inline and nothing from elsewhere. `connect-src 'self'` covers the WebSocket
too: CSP Level 3 browsers match ws:/wss: to the page's own host and port under 'self'.
"""

from django.conf import settings
from django.utils.deprecation import MiddlewareMixin

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


class ContentSecurityPolicyMiddleware(MiddlewareMixin):
    """Send the policy with every response that does not bring one of its own."""

    def process_response(self, request, response):
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        return response


def static_file_headers(headers, path: str, url: str) -> None:
    """WHITENOISE_ADD_HEADERS_FUNCTION: WhiteNoise answers a static file before the clickjacking
    middleware would add its header (the other middleware above it add theirs)."""
    headers["X-Frame-Options"] = settings.X_FRAME_OPTIONS.upper()


def security_headers() -> list[tuple[str, str]]:
    """The headers Django's middleware and the policy give an answer, for one written below Django
    (the WebSocket handshake's refusal)."""
    headers = [
        ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
        ("X-Frame-Options", settings.X_FRAME_OPTIONS.upper()),
    ]
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        headers.append(("X-Content-Type-Options", "nosniff"))
    policy = settings.SECURE_REFERRER_POLICY
    if policy:
        headers.append(("Referrer-Policy", policy if isinstance(policy, str) else ",".join(policy)))
    return headers
