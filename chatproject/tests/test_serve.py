"""chatproject.serve: daphne's access events become redacted log records instead of raw stream lines."""

import json
import os
import subprocess
import sys
from pathlib import Path

from chatproject.serve import AccessLoggingServer, log_access

BASE_DIR = Path(__file__).resolve().parents[2]

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJ1c2VyX2lkIjoiNyJ9.c2lnbmF0dXJlLXNlZ21lbnQ"


def without_time(line: dict) -> dict:
    return {key: value for key, value in line.items() if key != "time"}


def test_an_answered_http_request_is_one_record_with_the_query_token_redacted(json_log):
    log_access(
        "http",
        "complete",
        {
            "path": f"/messages/general?token={TOKEN}&after=3",
            "status": 200,
            "method": "GET",
            "client": "127.0.0.1:50000",
            "time_taken": 0.0123,
            "size": 512,
        },
    )

    assert [without_time(line) for line in json_log.lines()] == [
        {
            "level": "INFO",
            "logger": "daphne.access",
            "event": "GET /messages/general?token=[REDACTED]&after=3 200",
            "client": "127.0.0.1:50000",
            "path": "/messages/general?token=[REDACTED]&after=3",
            "method": "GET",
            "status": 200,
            "size": 512,
            "duration_ms": 12.3,
        }
    ]


def test_websocket_handshake_steps_are_logged_like_daphnes_own_lines(json_log):
    for action in ("connecting", "connected", "rejected", "disconnected"):
        log_access("websocket", action, {"path": "/ws/general", "client": "127.0.0.1:50001"})

    assert [line["event"] for line in json_log.lines()] == [
        "WSCONNECTING /ws/general",
        "WSCONNECT /ws/general",
        "WSREJECT /ws/general",
        "WSDISCONNECT /ws/general",
    ]


def test_the_server_logs_access_through_logging_exactly_when_daphne_wants_an_access_log():
    def stream_writer(protocol, action, details):
        raise AssertionError("daphne's stream access log must not be used")

    assert AccessLoggingServer(application=None, endpoints=["tcp:0"], action_logger=stream_writer).action_logger is (
        log_access
    )
    assert AccessLoggingServer(application=None, endpoints=["tcp:0"]).action_logger is None


def test_a_server_that_cannot_start_says_why_in_one_json_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "chatproject.serve", "-p", "1", "chatproject.asgi:application"],
        cwd=BASE_DIR,
        env={
            "PATH": os.environ.get("PATH", ""),
            "DJANGO_ENV": "production",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1
    [line] = [json.loads(line) for line in result.stderr.splitlines()]
    assert (line["level"], line["logger"]) == ("CRITICAL", "daphne.cli")
    assert "DJANGO_SECRET_KEY must be set" in line["event"]
    assert "Traceback" in line["exception"]


def test_uvicorns_start_failure_is_plain_for_log_format_plain_in_any_case(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "chatproject.serve_uvicorn", "-p", "1"],
        cwd=BASE_DIR,
        env={
            "PATH": os.environ.get("PATH", ""),
            "DJANGO_ENV": "production",
            "LOG_FORMAT": "PLAIN",  # the settings read it in any case: so does the line before them
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1
    assert " CRITICAL chatproject.serve server failed to start: " in result.stderr
    assert "DJANGO_SECRET_KEY must be set" in result.stderr
    assert not result.stderr.lstrip().startswith("{")
