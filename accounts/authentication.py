from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.settings import api_settings


def header_schemes() -> dict[bytes, bytes]:
    """The Authorization schemes taken, lower-cased, to their spelling in AUTH_HEADER_TYPES.

    A scheme is case-insensitive (RFC 9110, 11.1): a client that writes `token_type` ("bearer") into
    the header is answered as one that writes "Bearer".
    """
    return {kind.lower().encode("latin-1"): kind.encode("latin-1") for kind in api_settings.AUTH_HEADER_TYPES}


class BearerAuthentication(JWTAuthentication):
    """SimpleJWT's access-token check, answering 401 with a plain `WWW-Authenticate: Bearer`."""

    def get_raw_token(self, header: bytes) -> bytes | None:
        parts = header.split(None, 1)
        if parts:
            scheme = header_schemes().get(parts[0].lower())
            if scheme is not None:
                header = b" ".join([scheme, *parts[1:]])
        return super().get_raw_token(header)

    def authenticate_header(self, request) -> str:
        return "Bearer"
