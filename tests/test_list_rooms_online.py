"""manage.py list_rooms, a process of its own, beside a server holding an open socket."""

import pytest

from tests.test_server_realtime import next_event, ws_connect

pytestmark = pytest.mark.server


def online_column(server, room: str) -> str:
    listed = server.manage("list_rooms")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith(f"{room} "))
    return row.split()[2]


async def open_socket_then_list(server) -> str:
    user = server.new_user("lister")
    async with ws_connect(server, "general", user.access_token) as ws:
        assert (await next_event(ws))["type"] == "presence"
        return online_column(server, "general")


async def test_with_in_process_presence_online_is_unknown_not_zero(server):
    assert await open_socket_then_list(server) == "-"


async def test_with_redis_presence_online_counts_the_servers_sockets(launch_server, redis_url, tmp_path):
    with launch_server(tmp_path, REDIS_URL=redis_url) as server:
        assert await open_socket_then_list(server) == "1"
