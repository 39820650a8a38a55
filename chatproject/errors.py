"""Every error leaves the server as a JSON object: DRF errors, unknown paths and crashes alike."""

import logging
from http import HTTPStatus

from django.db import InterfaceError, OperationalError
from django.http import JsonResponse
from django.utils.deprecation import MiddlewareMixin
from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import exception_handler

from chatproject.ratelimit import RateLimited

logger = logging.getLogger("chat.errors")


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
    code = serializers.CharField(
        required=False,
        help_text="On some errors, a stable word for the reason: `token_not_valid`, `user_inactive`, "
        "`unavailable` (503), …",
    )
    messages = serializers.ListField(
        child=serializers.DictField(), required=False, help_text="On `token_not_valid`, why each token type refused it."
    )


class ForbiddenMessageSerializer(serializers.Serializer):
    detail = serializers.CharField()
    code = serializers.ChoiceField(choices=["muted", "archived"])
    until = serializers.DateTimeField(required=False, help_text="With `muted`: when the mute ends.")


class ValidationErrorSerializer(serializers.Serializer):
    """Field name → list of messages; `non_field_errors` or `detail` for errors of the whole body."""

    detail = serializers.CharField(required=False)
    non_field_errors = serializers.ListField(child=serializers.CharField(), required=False)


class RateLimitedSerializer(serializers.Serializer):
    detail = serializers.CharField()
    retry_after = serializers.IntegerField(min_value=1, help_text="Seconds to wait; also the Retry-After header.")


# The header every 429 carries, for `@extend_schema(parameters=[RETRY_AFTER_HEADER])` on rate-limited operations.
RETRY_AFTER_HEADER = OpenApiParameter(
    "Retry-After",
    int,
    OpenApiParameter.HEADER,
    required=True,
    response=[429],
    description="Seconds to wait before trying again; the same number as `retry_after`.",
)


def rate_limited_response(exc: RateLimited) -> Response:
    return Response(
        {"detail": "Too many requests; try again later.", "retry_after": exc.seconds},
        status=429,
        headers={"Retry-After": str(exc.seconds)},
    )


def api_exception_handler(exc, context):
    if isinstance(exc, RateLimited):
        return rate_limited_response(exc)
    response = exception_handler(exc, context)
    if response is not None and response.status_code == 401:
        response["WWW-Authenticate"] = "Bearer"
    return response


_DETAILS = {400: "Bad request.", 403: "Permission denied.", 404: "Not found.", 500: "Internal server error."}


def error_response(status: int) -> JsonResponse:
    """{"detail": ...} naming the status and nothing else: no exception text, path or setting."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return JsonResponse({"detail": _DETAILS.get(status, f"{phrase.capitalize()}.")}, status=status)


def not_found(request, exception=None):
    return error_response(404)


def bad_request(request, exception=None):
    return error_response(400)


def permission_denied(request, exception=None):
    return error_response(403)


def server_error(request):
    return error_response(500)


def _is_json(response) -> bool:
    media_type = response.get("Content-Type", "").split(";")[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


# A database that cannot be reached, or refuses work for now, is an outage, not a crash: 503, with
# how long to wait, and a log line without the traceback a crash gets. Any other database error (a
# missing table, a full disk) stays a 500 with its traceback: retrying would not help.
UNAVAILABLE_RETRY_AFTER_SECONDS = 5
# PostgreSQL's SQLSTATEs for "not now": connection exceptions (class 08), the server shutting down or
# starting (57P01-57P03), too many connections (53300).
_UNAVAILABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03", "53300")
_SQLITE_UNAVAILABLE = ("database is locked", "unable to open database file")


def database_unreachable(exc: BaseException) -> bool:
    """Whether a database error means "try again shortly" rather than a fault of what was asked."""
    if isinstance(exc, InterfaceError):  # the connection is closed
        return True
    if not isinstance(exc, OperationalError):
        return False
    cause = exc.__cause__
    sqlstate = getattr(cause, "sqlstate", None)
    if sqlstate:
        return sqlstate.startswith(_UNAVAILABLE_SQLSTATES)
    if type(cause).__module__.split(".")[0] in ("psycopg", "psycopg_pool"):
        return True  # no SQLSTATE: the connection failed, or the pool had none to give in time
    return any(text in str(exc) for text in _SQLITE_UNAVAILABLE)


def unavailable_response() -> JsonResponse:
    response = JsonResponse(
        {"detail": "The service is unavailable; try again shortly.", "code": "unavailable"}, status=503
    )
    response["Retry-After"] = str(UNAVAILABLE_RETRY_AFTER_SECONDS)
    return response


class JsonErrorMiddleware(MiddlewareMixin):
    """Answer every error as JSON, whoever made the response, the admin's included.

    Some errors never reach the handlers above: the CSRF failure page and a plain view's empty 405
    are HTML, and with DEBUG on Django answers an unknown path, a bad Host or a crash with its
    technical pages (URL patterns, traceback, settings), in the admin as anywhere else. The admin's
    own pages (forms, lists, its login) are 200s and redirects, and stay HTML.
    """

    def process_exception(self, request, exception):
        if database_unreachable(exception):
            logger.warning("%s %s: database unavailable (%s)", request.method, request.path, exception)
            return unavailable_response()
        return None

    def process_response(self, request, response):
        if response.status_code < 400 or _is_json(response):
            return response
        replacement = error_response(response.status_code)
        for name, value in response.headers.items():  # Allow of a 405, Retry-After, WWW-Authenticate, ...
            if name.lower() not in ("content-type", "content-length"):
                replacement.headers.setdefault(name, value)
        replacement.cookies = response.cookies
        # Django logs an error response once, marking it; the copy must not be logged again.
        replacement._has_been_logged = getattr(response, "_has_been_logged", False)
        return replacement
