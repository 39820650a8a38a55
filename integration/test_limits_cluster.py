"""Limits hold across nodes when they share Redis: the counts live in the shared cache."""

import time

import pytest

from integration.clients import connect_outcome, in_thread, open_socket, sockets_closed_at_exit
from integration.cluster import on_shared_services


@pytest.fixture(scope="module")
def limited_cluster(tmp_path_factory):
    with on_shared_services(
        tmp_path_factory.mktemp("limited"),
        AUTH_RATE="4/min",
        CHAT_MESSAGE_RATE="2/min",
        CHAT_MAX_CONNECTIONS_PER_USER="2",
    ) as cluster:
        # Limits count in fixed windows of a minute from the epoch: the module's requests start with
        # half a minute of one left, so that no count is split between two windows.
        left = 60 - time.time() % 60
        if left < 30:
            time.sleep(left + 0.1)
        yield cluster


async def test_connections_per_user_are_counted_on_every_node(limited_cluster):
    a, b = limited_cluster.a, limited_cluster.b
    user = await in_thread(limited_cluster.new_user, "sockets")
    async with sockets_closed_at_exit() as opened:
        opened.append(await open_socket(a, "general", user))
        opened.append(await open_socket(b, "python", user))
        assert await connect_outcome(a, "random", user, timeout=5) == ("closed", 4029)


def test_auth_and_message_limits_are_shared_by_the_nodes(limited_cluster):
    a, b = limited_cluster.a, limited_cluster.b
    # The previous test logged in once on node A; this user's login is the 2nd /token of the minute.
    user = limited_cluster.new_user("limited")
    form = {"username": user.username, "password": "correct-horse-battery-9"}
    assert b.post("/token", form=form).status == 200  # 3rd, on node B
    assert a.post("/token", form=form).status == 200  # 4th
    refused = b.post("/token", form=form)  # 5th
    assert refused.status == 429
    assert int(refused.headers["retry-after"]) == refused.json()["retry_after"] > 0

    assert a.post_message(user.access_token, "general", "one").status == 201
    assert b.post_message(user.access_token, "general", "two").status == 201
    third = a.post_message(user.access_token, "general", "three")
    assert third.status == 429
    assert [m["content"] for m in b.history_after(user.access_token, "general")] == ["one", "two"]
