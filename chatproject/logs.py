"""Log records as one JSON object per line, with secrets redacted and request/connection context attached.

Every string that reaches a log line passes through `redact`: message, arguments, extra fields and
exception text alike, so no access token, refresh token or ticket is ever written, whoever logs it.
Context (request_id or connection_id, user_id, room) is bound once per request or socket with
`log_context` and carried by every record logged inside it, across threads and tasks (contextvars).
"""

import contextlib
import json
import logging
import logging.config
import re
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qsl, unquote_plus, urlencode

REDACTED = "[REDACTED]"

# Three base64url segments of which the first is a JSON object ('{"' encodes to "eyJ"): a JWT.
# The later segments may be empty or missing (unsigned or truncated tokens are still secrets).
_JWT = re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*){1,2}")
# The credentials of an Authorization header, in any rendering (raw header, WSGI META, repr), and any
# long value after "Bearer" wherever it appears.
_AUTHORIZATION = re.compile(
    r"""(?i)((?<![A-Za-z])authorization["']?\s*[:=]\s*["']?(?:bearer|basic|token)\s+)[^\s"',;]+"""
)
_BEARER = re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/-]{16,}=*")
_SECRET_NAMES = frozenset({"access_token", "refresh_token", "token", "ticket", "password"})
# token=..., ticket=..., access_token=... in query strings and form bodies (also URL-encoded "%3D"),
# and "token": "..." in JSON or Python reprs.
_SECRET_PARAM = re.compile(
    rf"""(?ix)
    (\b(?:{"|".join(sorted(_SECRET_NAMES, key=len, reverse=True))})
      (?:\s*=\s*["']?|%3D|["']\s*:\s*["']?))
    (?!\[REDACTED\])[^\s&"',;}}\]]+
    """
)
# A name=value pair with a percent-escape in it, as in a query string: a query parser decodes the name
# and the value (`?%74oken=` authenticates as `?token=`), so the pair is judged decoded, as redact_uri
# judges a request target.
_QUERY_PARAMETER = re.compile(r"""([^\s?&=;"',]+)=([^\s?&"']*)""")

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
# Extras that say nothing the line does not: Django's HttpRequest object (the request_id names the
# request), and uvicorn's `color_message`, the event again with ANSI colour codes for a terminal.
_SKIPPED_EXTRAS = frozenset({"request", "color_message"})

_NO_CONTEXT: Mapping[str, Any] = MappingProxyType({})
_context: ContextVar[Mapping[str, Any]] = ContextVar("log_context", default=_NO_CONTEXT)


def redact(value: Any) -> Any:
    """Return `value` with every token-like substring of every string in it replaced by [REDACTED].

    A query parameter spelt with percent-escapes is judged decoded, as a query parser reads it.
    """
    if isinstance(value, str):
        value = _JWT.sub(REDACTED, value)
        value = _AUTHORIZATION.sub(rf"\g<1>{REDACTED}", value)
        value = _BEARER.sub(rf"\g<1>{REDACTED}", value)
        value = _SECRET_PARAM.sub(rf"\g<1>{REDACTED}", value)
        return _QUERY_PARAMETER.sub(_redact_escaped_parameter, value) if "%" in value else value
    if isinstance(value, Mapping):
        return {str(key): redact(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(item) for item in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(str(value))


def _redact_escaped_parameter(pair: re.Match) -> str:
    name, value = pair[1], pair[2]
    if "%" not in pair[0]:
        return pair[0]
    if unquote_plus(name).lower() in _SECRET_NAMES:
        return f"{name}={REDACTED}"
    # Each decoding leaves a shorter value or fewer '+', so redacting what it decodes to ends.
    decoded = unquote_plus(value)
    if decoded != value and redact(decoded) != decoded:
        return f"{name}={REDACTED}"
    return pair[0]


def redact_uri(uri: str) -> str:
    """Return a request target with the values of secret query parameters replaced by [REDACTED].

    The query is decoded first, so a percent-encoded name or token (`%74oken=%65yJ...`) is caught too.
    """
    path, question_mark, query = uri.partition("?")
    if not question_mark:
        return redact(uri)
    pairs = [
        (name, REDACTED if name.lower() in _SECRET_NAMES else redact(value))
        for name, value in parse_qsl(query, keep_blank_values=True)
    ]
    return f"{redact(path)}?{urlencode(pairs, safe='[]/:')}"


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Attach fields to every record logged inside the block (a callable value is read at log time)."""
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


@contextlib.contextmanager
def no_log_context() -> Iterator[None]:
    """Records logged inside the block carry no request or socket context, nor do tasks started in it:
    a process-wide background task (the hub's reader, the presence heartbeat) would otherwise carry
    the context of whichever socket happened to start it, long after that socket closed."""
    token = _context.set(_NO_CONTEXT)
    try:
        yield
    finally:
        _context.reset(token)


def context_fields() -> dict[str, Any]:
    """The bound context, callables resolved, fields without a value left out."""
    fields = {}
    for key, value in _context.get().items():
        if callable(value):
            try:
                value = value()
            except Exception:  # a lazy field must never break logging
                value = None
        if value is not None:
            fields[key] = value
    return fields


def _iso_utc(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _RECORD_ATTRIBUTES and key not in _SKIPPED_EXTRAS and not key.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, event, context and extra fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _iso_utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in {**context_fields(), **_extra_fields(record)}.items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # ASCII only: a U+2028 in a message would otherwise split the line for many readers.
        return json.dumps(redact(entry), ensure_ascii=True, default=str)


class PlainFormatter(logging.Formatter):
    """`time level logger event key=value ...` for people reading a terminal; redacted like JSON."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = {**context_fields(), **_extra_fields(record)}
        if fields:
            head, newline, rest = line.partition("\n")
            pairs = " ".join(f"{key}={value}" for key, value in fields.items())
            line = f"{head} {pairs}{newline}{rest}"
        return redact(line)


class RedisReconnectIsWarning(logging.Filter):
    """channels_redis logs ERROR with a traceback whenever its pub/sub connection to Redis drops, and
    then reconnects by itself (sockets heal from the database meanwhile): that is a WARNING."""

    def filter(self, record: logging.LogRecord) -> bool:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        kind = record.exc_info[0] if record.exc_info else None
        if record.levelno > logging.WARNING and kind and issubclass(kind, RedisConnectionError | RedisTimeoutError):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class ClientMistakeIsWarning(logging.Filter):
    """Django logs ERROR with a traceback when it refuses a request as suspicious (a Host header not in
    ALLOWED_HOSTS, a body over DATA_UPLOAD_MAX_MEMORY_SIZE, too many fields or files) and answers 400:
    a client's mistake or probe, not a fault of the server. That is a WARNING; the traceback, always the
    same path through Django, says nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.WARNING:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info = record.exc_text = None
        return True


def configure_logging(config: dict) -> None:
    """LOGGING_CONFIG: apply the dict config and send Python warnings through it too."""
    logging.config.dictConfig(config)
    logging.captureWarnings(True)
