"""chatproject.logs: one JSON object per line, context from contextvars, tokens redacted everywhere."""

import json
import logging
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from chatproject.logs import JsonFormatter, PlainFormatter, log_context, redact, redact_uri
from tests.conftest import SERVER_NAME, launch_server

BASE_DIR = Path(__file__).resolve().parents[2]
SIGNATURE = "mN3vQ8pX2rT5wY7zA1bC4dE6fG9hJ0kL-_s2u4w6y8A"
JWT = f"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ0b2tlbl90eXBlIjoiYWNjZXNzIiwidXNlcl9pZCI6IjcifQ.{SIGNATURE}"
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")

logger = logging.getLogger("test.logs")


def without_time(line: dict) -> dict:
    return {key: value for key, value in line.items() if key != "time"}


def test_a_record_is_one_json_object_with_time_level_logger_and_event(json_log):
    logger.warning("%s joined %s", "alice", "general")

    [line] = json_log.lines()
    assert without_time(line) == {"level": "WARNING", "logger": "test.logs", "event": "alice joined general"}
    assert ISO_UTC.fullmatch(line["time"])
    logged_at = datetime.fromisoformat(line["time"].replace("Z", "+00:00"))
    assert abs(datetime.now(UTC) - logged_at) < timedelta(seconds=5)


def test_context_and_extra_fields_join_the_object_and_the_context_ends_with_its_block(json_log):
    with log_context(connection_id="c1", user_id=lambda: 7, room=None):
        logger.info("ws.close", extra={"room": "general", "code": 4003})
        with log_context(request_id="r1"):
            logger.info("inner")
    logger.info("outside")

    assert [without_time(line) for line in json_log.lines()] == [
        {
            "level": "INFO",
            "logger": "test.logs",
            "event": "ws.close",
            "connection_id": "c1",
            "user_id": 7,
            "room": "general",
            "code": 4003,
        },
        {
            "level": "INFO",
            "logger": "test.logs",
            "event": "inner",
            "connection_id": "c1",
            "user_id": 7,
            "request_id": "r1",
        },
        {"level": "INFO", "logger": "test.logs", "event": "outside"},
    ]


def test_a_lazy_context_field_that_fails_is_left_out(json_log):
    with log_context(user_id=lambda: 1 / 0):
        logger.info("still logged")

    assert [without_time(line) for line in json_log.lines()] == [
        {"level": "INFO", "logger": "test.logs", "event": "still logged"}
    ]


def test_an_exception_is_one_field_on_the_same_line_and_redacted(json_log):
    try:
        raise ValueError(f"could not use token={JWT} for Authorization: Bearer {JWT}")
    except ValueError:
        logger.exception("refresh failed for %s", JWT)

    text = json_log.text()
    assert text.count("\n") == 1
    [line] = json_log.lines()
    assert line["event"] == "refresh failed for [REDACTED]"
    assert line["exception"].startswith("Traceback (most recent call last):")
    assert line["exception"].endswith("ValueError: could not use token=[REDACTED] for Authorization: Bearer [REDACTED]")
    assert "eyJ" not in text and SIGNATURE not in text


@pytest.mark.parametrize(
    ("message", "args", "extra"),
    [
        pytest.param("GET /ws/general?token=%s&since=3", (JWT,), {}, id="jwt-in-args"),
        pytest.param(f"GET /ws/general?token={JWT}", (), {}, id="jwt-in-message"),
        pytest.param("connect", (), {"path": f"/messages/x?token={JWT}"}, id="jwt-in-extra"),
        pytest.param("connect", (), {"query": {"token": [JWT]}}, id="jwt-nested-in-extra"),
        pytest.param("headers %s", ({"HTTP_AUTHORIZATION": f"Bearer {SIGNATURE}"},), {}, id="authorization-repr"),
        pytest.param("refresh with %s", ('{"refresh_token": "' + SIGNATURE + '"}',), {}, id="json-body"),
        pytest.param(f"/messages/x?after=1&access_token={SIGNATURE}", (), {}, id="access_token-param"),
        pytest.param(f"/ws/general?ticket={SIGNATURE}", (), {}, id="ticket-param"),
        pytest.param(f"/ws/general?token%3D{SIGNATURE}", (), {}, id="url-encoded-param"),
        pytest.param('"WebSocket %s" [accepted]', (f"/ws/general?tick%65t={SIGNATURE}",), {}, id="escaped-name"),
        pytest.param(f"/ws/general?%61ccess_%74oken={SIGNATURE}", (), {}, id="escaped-underscored-name"),
    ],
)
def test_no_token_survives_in_message_args_or_fields(json_log, message, args, extra):
    logger.info(message, *args, extra=extra)

    text = json_log.text()
    assert "[REDACTED]" in text
    assert SIGNATURE not in text and "eyJ" not in text
    json.loads(text)


def test_ordinary_text_is_not_redacted():
    for text in [
        "ws close 4001: token not accepted",
        "keyJar.open",
        "the bearer authentication failed",
        "room=general",
        "progress=50%",
        "/rooms?name=caf%C3%A9&limit=5",
    ]:
        assert redact(text) == text


def test_a_line_separator_in_a_message_does_not_split_the_line(json_log):
    logger.info("a\u2028b\nc\u00e9")

    assert len(json_log.text().splitlines()) == 1
    assert json_log.lines()[0]["event"] == "a\u2028b\nc\u00e9"


def test_redact_uri_decodes_the_query_before_judging_it():
    assert redact_uri(f"/messages/general?token={JWT}&after=3") == "/messages/general?token=[REDACTED]&after=3"
    assert redact_uri("/ws/general?%74oken=abc&since=1") == "/ws/general?token=[REDACTED]&since=1"
    assert redact_uri("/ws/general?next=%65yJhb.c.d") == "/ws/general?next=[REDACTED]"
    assert redact_uri("/rooms") == "/rooms"


def test_the_plain_format_is_one_readable_line_with_the_context_and_redacted():
    record = logging.LogRecord("chat.ws", logging.INFO, __file__, 1, "refused %s", (JWT,), None)
    record.code = 4001
    with log_context(connection_id="c1"):
        line = PlainFormatter().format(record)

    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO chat.ws refused \[REDACTED\] connection_id=c1 code=4001", line
    )


def test_the_json_formatter_leaves_out_djangos_request_object():
    record = logging.LogRecord("django.request", logging.ERROR, __file__, 1, "Internal Server Error", (), None)
    record.request = object()
    record.status_code = 500

    assert without_time(json.loads(JsonFormatter().format(record))) == {
        "level": "ERROR",
        "logger": "django.request",
        "event": "Internal Server Error",
        "status_code": 500,
    }


def uvicorn_record() -> logging.LogRecord:
    """A record as uvicorn logs it: the event again in ANSI colours for a terminal, as an extra."""
    record = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, "Started server process [%d]", (7,), None)
    record.color_message = "Started server process [\x1b[36m%d\x1b[0m]"
    return record


def test_the_json_formatter_leaves_out_uvicorns_colour_codes():
    assert without_time(json.loads(JsonFormatter().format(uvicorn_record()))) == {
        "level": "INFO",
        "logger": "uvicorn.error",
        "event": "Started server process [7]",
    }


def test_the_plain_formatter_leaves_out_uvicorns_colour_codes():
    line = PlainFormatter().format(uvicorn_record())

    assert line.endswith(" INFO uvicorn.error Started server process [7]"), line
    assert "\x1b" not in line


LOG_FROM_DJANGO = f"""
import logging, warnings
import django
django.setup()
logging.getLogger("django").warning("from django token=secret1")
logging.getLogger("chat").info("from chat %s", "{JWT}")
logging.getLogger("chat").debug("hidden below LOG_LEVEL")
warnings.warn("careful with {JWT}")
"""


def run_with_settings(tmp_path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", LOG_FROM_DJANGO],
        cwd=BASE_DIR,
        env={
            "PATH": os.environ.get("PATH", ""),
            "DJANGO_SETTINGS_MODULE": "chatproject.settings",
            "DJANGO_SECRET_KEY_FILE": str(tmp_path / "key"),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_settings_send_django_chat_and_warnings_through_the_json_handler_once(tmp_path):
    # DEBUG on: Django's default config would also print the django logger's records in plain text.
    result = run_with_settings(tmp_path, DJANGO_DEBUG="true")

    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert [(line["level"], line["logger"], line["event"]) for line in lines] == [
        ("WARNING", "django", "from django token=[REDACTED]"),
        ("INFO", "chat", "from chat [REDACTED]"),
        ("WARNING", "py.warnings", lines[2]["event"]),
    ]
    assert "careful with [REDACTED]" in lines[2]["event"]
    assert "secret1" not in result.stderr and SIGNATURE not in result.stderr


def test_log_format_plain_and_log_level_come_from_the_environment(tmp_path):
    result = run_with_settings(tmp_path, LOG_FORMAT="plain", LOG_LEVEL="debug")

    assert result.returncode == 0, result.stderr
    assert " WARNING django from django token=[REDACTED]" in result.stderr
    assert " DEBUG chat hidden below LOG_LEVEL" in result.stderr
    assert not result.stderr.lstrip().startswith("{")
    assert SIGNATURE not in result.stderr


# --- a real server process ------------------------------------------------------------------

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
# Requests Django refuses as suspicious, each answered 400: the logger it names, the request.
CLIENT_MISTAKES = [
    pytest.param("django.security.DisallowedHost", "GET", "/rooms", {"Host": "evil.example"}, None, id="bad-host"),
    pytest.param(
        "django.security.RequestDataTooBig", "POST", "/register", FORM, b"x" * (3 * 1024 * 1024), id="body-too-big"
    ),
    pytest.param(
        "django.security.TooManyFieldsSent",
        "POST",
        "/token",
        FORM,
        "&".join(f"f{n}=1" for n in range(1001)).encode(),
        id="too-many-fields",
    ),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with launch_server(tmp_path_factory.mktemp("logs")) as running:
        yield running


def server_lines(server) -> list[dict]:
    return [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]


@pytest.mark.server
@pytest.mark.parametrize(("logger_name", "method", "path", "headers", "body"), CLIENT_MISTAKES)
def test_a_request_django_refuses_as_a_client_mistake_is_a_warning_without_traceback(
    server, logger_name, method, path, headers, body
):
    response = server.request(method, path, headers=headers, raw_body=body)

    assert (response.status, response.json()) == (400, {"detail": "Bad request."})
    request_id = response.headers["x-request-id"]
    [logged] = [
        line for line in server_lines(server) if line.get("request_id") == request_id and line["logger"] != "chat.http"
    ]
    assert without_time(logged) == {
        "level": "WARNING",
        "logger": logger_name,
        "event": logged["event"],
        "request_id": request_id,
        "status_code": 400,
    }


@pytest.mark.server
@pytest.mark.skipif(SERVER_NAME != "uvicorn", reason="uvicorn's own log lines")
def test_uvicorns_own_lines_carry_no_colour_codes(server):
    lines = server_lines(server)

    assert any(
        line["logger"] == "uvicorn.error" and line["event"].startswith("Started server process") for line in lines
    )
    assert "color_message" not in server.log() and "\\u001b" not in server.log()
