"""A request id for every HTTP request, and one log line when it is answered."""

import logging
import re
import time
import uuid

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.utils.functional import SimpleLazyObject, empty

from chatproject.logs import log_context, redact

logger = logging.getLogger("chat.http")

REQUEST_ID_HEADER = "X-Request-ID"
# Ids from proxies and tracers (UUIDs, hex, base64) fit; spaces, quotes and control characters do not.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")


def request_id_for(request) -> str:
    """The caller's X-Request-ID when it is a short printable id, else a new one."""
    return request_id_from(request.headers.get(REQUEST_ID_HEADER, ""))


def request_id_from(incoming: str) -> str:
    """`incoming` (an X-Request-ID value) when it is a short printable id, else a new id."""
    # Anything the redactor would alter (a token sent by mistake) is neither echoed nor logged.
    if _VALID_REQUEST_ID.fullmatch(incoming) and redact(incoming) == incoming:
        return incoming
    return uuid.uuid4().hex


def authenticated_user_id(request) -> int | None:
    """The id of the user authentication already resolved; never resolves one just to log it."""
    user = getattr(request, "user", None)
    # Django's session user is a lazy object until something asks for it; a Bearer user is set
    # on the request by DRF when the view authenticates. Only the latter is read here.
    if isinstance(user, SimpleLazyObject) and user._wrapped is empty:
        return None
    if user is None or not user.is_authenticated:
        return None
    return user.pk


def request_log_context(request):
    """Give the request its id and bind it, with the user id once known, to the records logged meanwhile."""
    request.request_id = request_id_for(request)
    return log_context(request_id=request.request_id, user_id=lambda: authenticated_user_id(request))


class RequestLogMiddleware:
    """Bind a request id to every log record of the request, echo it, and log the outcome."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.is_async:
            return self._acall(request)
        started = time.perf_counter()
        with request_log_context(request):
            return self._answered(request, self.get_response(request), started)

    async def _acall(self, request):
        started = time.perf_counter()
        with request_log_context(request):
            return self._answered(request, await self.get_response(request), started)

    def _answered(self, request, response, started: float):
        response[REQUEST_ID_HEADER] = request.request_id
        log_answer(request.method, request.path, response.status_code, started)
        # This line is the answer's record: Django would log a 5xx once more (django.request), after
        # this middleware returned, so without the request's id. An exception's traceback is logged
        # before, inside the request.
        response._has_been_logged = True
        return response


def log_answer(method: str, path: str, status: int, started: float) -> None:
    """The request's log line; `path` never with the query string, which may carry ?token=."""
    logger.log(
        logging.ERROR if status >= 500 else logging.INFO,
        "http.request",
        extra={
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        },
    )
