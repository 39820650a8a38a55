"""The commands that print a line per message, piped into a reader that stops early (`| head -1`).

They run as separate processes against a real server's database, with their stdout a real pipe.
"""

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.server

ROOM = "pipes"
# Each command writes far more than a pipe (64 KiB), head's read and stdout's buffer hold together, so it
# is still writing when head leaves: 600 lines of about 220 bytes (a 149-character author) or more.
MESSAGES = 600
AUTHOR_PREFIX = "p" * 140
READER_GONE = 141  # 128 + SIGPIPE, as the shell reports `cat` or `seq` cut short by head


@pytest.fixture(scope="module")
def filled(server) -> None:
    user = server.new_user(AUTHOR_PREFIX)
    assert server.post("/rooms", json_body={"name": ROOM}, token=user.access_token).status == 201
    for n in range(MESSAGES):
        assert server.post_message(user.access_token, ROOM, f"{n:04} " + "x" * 200).status == 201


COMMANDS = [
    pytest.param(["export_messages", ROOM], id="export"),
    pytest.param(["export_messages", ROOM, "--format", "csv"], id="export-csv"),
    pytest.param(["purge_messages", "--older-than", "0", "--room", ROOM, "--dry-run"], id="purge-dry-run"),
]


def run_into_head(server, *args: str) -> subprocess.CompletedProcess:
    """`manage.py ARGS | head -1` in bash; stderr ends with the command's own exit status (not head's)."""
    command = " ".join([sys.executable, "manage.py", *args])
    script = f'{command} | head -1; echo "status=${{PIPESTATUS[0]}}" >&2'
    return subprocess.run(
        ["bash", "-c", script], cwd=REPO_ROOT, env=server.env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("args", COMMANDS)
def test_piped_into_head_a_command_stops_quietly(server, filled, args):
    result = run_into_head(server, *args)

    assert len(result.stdout.splitlines()) == 1
    assert result.stderr == f"status={READER_GONE}\n"  # no traceback, no "Exception ignored"


def run_with_the_reader_gone(server, *args: str) -> subprocess.CompletedProcess:
    """Run manage.py with its stdout a pipe nobody reads any more: every write fails, the last flush included."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=REPO_ROOT,
            env=server.env,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize("args", COMMANDS)
def test_a_reader_gone_before_the_first_line_ends_the_command_quietly(server, filled, args):
    result = run_with_the_reader_gone(server, *args)

    assert (result.returncode, result.stderr) == (READER_GONE, "")


def test_a_short_output_to_a_reader_that_left_ends_quietly_too(server, filled):
    # One line only: still in stdout's buffer when the command returns, it fails at the flush.
    result = run_with_the_reader_gone(server, "purge_messages", "--older-than", "100000", "--dry-run")

    assert (result.returncode, result.stderr) == (READER_GONE, "")


def test_nothing_was_purged_by_the_dry_runs(server, filled):
    exported = server.manage("export_messages", ROOM)

    assert (exported.returncode, len(exported.stdout.splitlines())) == (0, MESSAGES)


def test_a_purge_cut_short_by_its_reader_deleted_what_it_printed(server):
    user = server.new_user(AUTHOR_PREFIX)
    room = "pipes-purge"
    assert server.post("/rooms", json_body={"name": room}, token=user.access_token).status == 201
    for n in range(MESSAGES):
        assert server.post_message(user.access_token, room, f"m{n}").status == 201
    result = run_into_head(server, "purge_messages", "--older-than", "0", "--room", room)

    assert result.stderr == f"status={READER_GONE}\n"
    [printed] = result.stdout.splitlines()
    assert printed.startswith(f"deleted {room}#1 by {user.username} at ")
    assert 1 not in [message["seq"] for message in server.history_after(user.access_token, room)]
