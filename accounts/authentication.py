from rest_framework_simplejwt.authentication import JWTAuthentication


class BearerAuthentication(JWTAuthentication):
    """SimpleJWT's access-token check, answering 401 with a plain `WWW-Authenticate: Bearer`."""

    def authenticate_header(self, request) -> str:
        return "Bearer"
