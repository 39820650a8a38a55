"""The operators' manage.py commands (issue 7) as separate processes: exit codes, stderr, live effect."""

import json

import pytest

from tests.test_server_realtime import closed_with, next_event, ws_connect

pytestmark = pytest.mark.server


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["create_room", "general"], "A room with that name already exists."),
        (["create_room", "bad name"], "name: Use 1-50 letters"),
        (["export_messages", "nowhere"], "Unknown room 'nowhere'."),
        (["purge_messages", "--older-than", "-1"], "--older-than must be 0 or more days."),
        (["purge_messages", "--older-than", "1", "--room", "nowhere"], "Unknown room 'nowhere'."),
        (["ban_user", "nobody"], "Unknown user 'nobody'."),
        (["mute_user", "nobody", "general", "--minutes", "5"], "Unknown user 'nobody'."),
        (["create_moderator", "nobody"], "Unknown user 'nobody'."),
    ],
)
def test_errors_go_to_stderr_with_exit_status_1(server, args, error):
    result = server.manage(*args)
    assert (result.returncode, result.stdout) == (1, "")
    assert error in result.stderr


@pytest.mark.parametrize(
    "command",
    [
        "create_moderator",
        "create_room",
        "list_rooms",
        "export_messages",
        "purge_messages",
        "ban_user",
        "mute_user",
        "chat_stats",
    ],
)
def test_every_command_has_help(server, command):
    result = server.manage(command, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage:")


def test_create_room_then_list_and_export(server):
    created = server.manage("create_room", "ops-room", "--title", "Ops")
    assert (created.returncode, created.stdout, created.stderr) == (0, "Created room ops-room.\n", "")
    assert any(r["name"] == "ops-room" for r in server.get("/rooms").json()["rooms"])
    user = server.new_user("ops")
    assert server.post_message(user.access_token, "ops-room", "first").status == 201

    listed = server.manage("list_rooms")
    assert listed.returncode == 0
    row = next(line for line in listed.stdout.splitlines() if line.startswith("ops-room "))
    assert row.split()[:4] == ["ops-room", "Ops", "-", "1"]  # online unknown: presence is in the server process

    exported = server.manage("export_messages", "ops-room")
    assert exported.returncode == 0
    assert exported.stderr == ""  # no progress bar when stderr is not a terminal
    assert [json.loads(line) for line in exported.stdout.splitlines()] == server.history_after(
        user.access_token, "ops-room"
    )


async def test_purge_and_ban_from_the_shell_reach_open_sockets(launch_server, redis_url, tmp_path):
    # On Redis, a command in another process reaches the server's sockets through the channel layer.
    with launch_server(tmp_path, REDIS_URL=redis_url) as server:
        await _purge_then_ban(server)


async def _purge_then_ban(server):
    author, reader = server.new_user("author"), server.new_user("reader")
    sent = server.post_message(author.access_token, "general", "old news").json()
    async with ws_connect(server, "general", reader.access_token) as reader_ws:
        assert (await next_event(reader_ws))["type"] == "presence"
        assert (await next_event(reader_ws))["type"] == "join"

        purged = server.manage("purge_messages", "--older-than", "0", "--room", "general")
        assert purged.returncode == 0, purged.stderr
        assert await next_event(reader_ws) == {
            "type": "message_deleted",
            "room": "general",
            "id": sent["id"],
            "seq": sent["seq"],
        }

        banned = server.manage("ban_user", reader.username)
        assert (banned.returncode, banned.stdout) == (0, f"Banned {reader.username}.\n")
        assert await closed_with(reader_ws) == 4003
