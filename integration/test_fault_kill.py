"""A node killed with -9 while messages flow: its clients resume elsewhere, its users leave presence.

Three nodes share a private Redis and a private PostgreSQL; node B is killed. Two survivors (A and C)
make "exactly one node announces each departure" observable. The scenario runs once per module and
records what every client saw; each test checks one promise.
"""

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from integration.clients import (
    Socket,
    as_event,
    in_thread,
    open_socket,
    seqs,
    sockets_closed_at_exit,
)
from integration.cluster import (
    Cluster,
    kill_9,
    online_counts,
    running_cluster,
)
from tests.conftest import HttpResponse

TTL = 6  # CHAT_PRESENCE_TTL_SECONDS: heartbeats every TTL/3 = 2 s
SLACK = 2.0
DROP_OUT_BOUND = TTL + TTL / 3 + SLACK  # expiry after the last heartbeat, then one sweep period
RECONNECT_DELAY = 0.3  # a client's backoff: messages committed meanwhile must come from since=
ROOM = "general"


@dataclass
class Mover:
    """A client of node B that reconnects to a surviving node with since= after the kill."""

    name: str
    before: Socket
    after: Socket | None = None
    since: int | None = None


@dataclass
class KillRecord:
    cluster: Cluster
    base: int = 0
    final: int = 0
    killed_at: float = 0.0
    movers: list[Mover] = field(default_factory=list)
    survivors: dict[str, Socket] = field(default_factory=dict)  # sockets that lived through it all
    ghost_payload: dict = field(default_factory=dict)
    mover_payloads: list[dict] = field(default_factory=list)
    twin_payload: dict = field(default_factory=dict)
    online_before: int = 0
    drop_out_after: float | None = None  # seconds from the kill until /rooms stopped counting the ghost
    online_after: dict[str, int] = field(default_factory=dict)
    leave_after: dict[str, float | None] = field(default_factory=dict)
    # What each survivor had received when the scenario ended, before its sockets close (closing
    # them announces their own users' leaves to the sockets still open).
    survivor_events: dict[str, list[dict]] = field(default_factory=dict)
    presence_after: dict = field(default_factory=dict)
    rest_posts: list[HttpResponse] = field(default_factory=list)
    ws_sent: list[str] = field(default_factory=list)
    committed_while_away: list[int] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)


async def kill_scenario(cluster: Cluster) -> KillRecord:
    a, b, c = cluster.nodes
    record = KillRecord(cluster=cluster)
    watcher_a, watcher_c, poster = cluster.new_user("watch-a"), cluster.new_user("watch-c"), cluster.new_user("poster")
    movers = [cluster.new_user("mover1"), cluster.new_user("mover2")]
    ghost, twin = cluster.new_user("ghost"), cluster.new_user("twin")
    record.ghost_payload, record.twin_payload = ghost.payload, twin.payload
    record.mover_payloads = [m.payload for m in movers]
    fallback = {movers[0].username: a, movers[1].username: c}

    async with sockets_closed_at_exit() as opened:
        survivors = {
            "watcher on A": await open_socket(a, ROOM, watcher_a),
            "watcher on C": await open_socket(c, ROOM, watcher_c),
            "twin on A": await open_socket(a, ROOM, twin),
        }
        opened += survivors.values()
        twin_b = await open_socket(b, ROOM, twin)
        ghost_b = await open_socket(b, ROOM, ghost)
        opened += [twin_b, ghost_b]
        for user in movers:
            socket = await open_socket(b, ROOM, user)
            opened.append(socket)
            record.movers.append(Mover(name=user.username, before=socket))
        for socket in survivors.values():
            for user in (*movers, ghost, twin):
                await socket.wait_for(
                    lambda e, u=user: e["type"] == "join" and e["user"] == u.payload, what=f"{user.username}'s join"
                )
        record.survivors = survivors
        record.online_before = online_counts(a)[ROOM]
        record.base = a.last_seq(poster.access_token, ROOM)

        stop = asyncio.Event()

        async def post_over_rest() -> None:
            k = 0
            while not stop.is_set():
                response = await in_thread(a.post_message, poster.access_token, ROOM, f"rest {k}", f"rest-{k}")
                record.rest_posts.append(response)
                k += 1
                await asyncio.sleep(0.04)

        async def send_over_websocket() -> None:
            k = 0
            while not stop.is_set():
                await survivors["watcher on C"].send_message(f"ws {k}", client_id=f"ws-{k}")
                record.ws_sent.append(f"ws-{k}")
                k += 1
                await asyncio.sleep(0.06)

        async def resume(mover: Mover) -> None:
            await mover.before.wait_closed(timeout=15)
            await asyncio.sleep(RECONNECT_DELAY)
            user = next(u for u in movers if u.username == mover.name)
            mover.since = max(seqs(mover.before.events), default=record.base)
            newest = await in_thread(a.last_seq, poster.access_token, ROOM)
            record.committed_while_away.append(newest - mover.since)
            mover.after = await open_socket(fallback[mover.name], ROOM, user, since=mover.since)
            opened.append(mover.after)

        senders = [asyncio.create_task(post_over_rest()), asyncio.create_task(send_over_websocket())]
        try:
            await asyncio.sleep(1.0)
            record.killed_at = kill_9(b)
            await asyncio.wait_for(asyncio.gather(*(resume(m) for m in record.movers)), 20)
            await asyncio.sleep(1.0)  # keep sending to the resumed clients
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*senders, return_exceptions=True), 30)

        sentinel = await in_thread(a.post_message, poster.access_token, ROOM, "sentinel")
        assert sentinel.status == 201, sentinel.body
        record.final = sentinel.json()["seq"]
        live = [*survivors.values(), *(m.after for m in record.movers)]
        for socket in live:
            await socket.wait_for_seq(record.final, timeout=15)

        # The ghost's presence entry expires TTL after its last heartbeat; a sweep then removes it.
        deadline = record.killed_at + DROP_OUT_BOUND + 5
        while time.monotonic() < deadline:
            record.online_after = {"A": online_counts(a)[ROOM], "C": online_counts(c)[ROOM]}
            if record.online_after["A"] < record.online_before:
                record.drop_out_after = time.monotonic() - record.killed_at
                break
            await asyncio.sleep(0.2)
        for name, socket in survivors.items():
            leave = await socket.poll_for(
                lambda e: e["type"] == "leave" and e["user"] == ghost.payload,
                timeout=max(0.1, deadline - time.monotonic()),
            )
            record.leave_after[name] = time.monotonic() - record.killed_at if leave else None
        await asyncio.sleep(TTL / 3 + 1)  # one more sweep on each survivor: a second leave would show
        record.survivor_events = {name: list(socket.events) for name, socket in survivors.items()}
        record.online_after = {"A": online_counts(a)[ROOM], "C": online_counts(c)[ROOM]}
        fresh = await open_socket(c, ROOM, poster)
        opened.append(fresh)
        record.presence_after = fresh.events[0]
        record.history = a.history_after(poster.access_token, ROOM, after=record.base)
    return record


@pytest.fixture(scope="module")
def killed(tmp_path_factory, private_database_url, private_redis) -> Iterator[KillRecord]:
    with running_cluster(
        tmp_path_factory.mktemp("kill"),
        nodes=3,
        database_url=private_database_url,
        redis_url=private_redis.url,
        CHAT_PRESENCE_TTL_SECONDS=str(TTL),
    ) as cluster:
        yield asyncio.run(kill_scenario(cluster))


def test_clients_of_the_killed_node_resume_on_another_node_with_since_and_miss_nothing(killed):
    expected = [as_event(m) for m in killed.history]
    assert [m["seq"] for m in killed.history] == list(range(killed.base + 1, killed.final + 1))
    for mover in killed.movers:
        before = mover.before.messages()
        after = mover.after.messages()
        assert mover.before.close_code == 1006, "the node died: no close frame"
        assert seqs(before) == list(range(killed.base + 1, mover.since + 1))
        assert before + after == expected, f"{mover.name}: seqs {seqs(before)} then {seqs(after)}"
    # Messages were committed while the movers were away, so since= had something to replay.
    assert min(killed.committed_while_away) > 0, killed.committed_while_away


def test_senders_on_the_surviving_nodes_lost_nothing(killed):
    by_client_id = {m["client_id"]: m for m in killed.history}
    assert killed.rest_posts and killed.ws_sent
    for response in killed.rest_posts:
        assert response.status == 201, (response.status, response.body)
        assert by_client_id[response.json()["client_id"]] == response.json()
    assert set(killed.ws_sent) <= set(by_client_id)
    expected = [as_event(m) for m in killed.history]
    for name, socket in killed.survivors.items():
        assert socket.messages() == expected, f"{name}: {seqs(socket.events)}"


def test_users_of_the_killed_node_drop_out_of_presence_within_the_ttl_bound(killed):
    # watchers A and C, the twin (still on A), two movers, the ghost
    assert killed.online_before == 6
    assert killed.drop_out_after is not None, f"the ghost is still online {DROP_OUT_BOUND + 5:.0f}s after the kill"
    assert killed.drop_out_after <= DROP_OUT_BOUND, f"dropped out after {killed.drop_out_after:.1f}s"
    assert killed.online_after == {"A": 5, "C": 5}
    online = killed.presence_after["users"]
    assert killed.ghost_payload not in online
    assert killed.twin_payload in online and all(m in online for m in killed.mover_payloads)


def test_survivors_receive_exactly_one_leave_for_a_user_of_the_killed_node(killed):
    for name, events in killed.survivor_events.items():
        arrived = killed.leave_after[name]
        assert arrived is not None and arrived <= DROP_OUT_BOUND, f"{name}: leave after {arrived}"
        leaves = [e for e in events if e["type"] == "leave"]
        # Only the ghost left: the twin is still on A, the movers came back before their entries expired.
        assert [e["user"] for e in leaves] == [killed.ghost_payload], f"{name}: {leaves}"
        for payload in killed.mover_payloads:
            joins = [e for e in events if e["type"] == "join" and e["user"] == payload]
            assert len(joins) == 1, f"{name}: {payload['username']} joined {len(joins)} times"
