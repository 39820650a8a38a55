"""Redis restarts under two running nodes: nothing is dropped silently and the nodes heal on their own.

The nodes share a private redis-server (no persistence: it comes back empty) and a private PostgreSQL.
The scenario stops Redis, keeps sending over WebSocket and REST on both nodes, starts Redis again on
the same port, and records what every client saw; each test checks one promise.
"""

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from integration.backends import PrivateRedis
from integration.clients import (
    Socket,
    as_event,
    connect_outcome,
    in_thread,
    is_json_error,
    json_or_none,
    open_socket,
    seqs,
    sockets_closed_at_exit,
)
from integration.cluster import (
    Cluster,
    health,
    online_counts,
    running_cluster,
    wait_healthy,
)
from tests.conftest import HttpResponse

TTL = 6  # CHAT_PRESENCE_TTL_SECONDS: heartbeats (which rebuild presence) every 2 s
ROUNDS = 4  # sends per socket and per node over REST while Redis is down
ANSWER_TIMEOUT = 15.0
RECOVERY_TIMEOUT = 20.0
CROSS_NODE_BOUND = 10.0  # "within a few seconds" of Redis being back
ROOM = "general"


@dataclass
class RedisRecord:
    cluster: Cluster
    pids: list[int] = field(default_factory=list)
    base: int = 0
    final: int = 0
    ws_answers: dict[str, dict | None] = field(default_factory=dict)  # client_id -> its message/error event
    rest_answers: dict[str, HttpResponse] = field(default_factory=dict)
    sockets_open_during_outage: dict[str, bool] = field(default_factory=dict)
    healthz_down: list[tuple[int, dict]] = field(default_factory=list)
    connect_down: tuple[str, object] = ("", None)
    healthy_after: float | None = None
    cross_node_after: dict[str, float | None] = field(default_factory=dict)
    existing: dict[str, Socket] = field(default_factory=dict)
    replayed: list[dict] = field(default_factory=list)
    presence_after: dict = field(default_factory=dict)
    presence_expected: list[dict] = field(default_factory=list)
    online_after: dict[str, int] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)


async def first_delivery(
    sender_node, token: str, receiver: Socket, *, label: str, timeout: float
) -> tuple[float | None, int]:
    """Post probes on one node until the other node's socket receives one live; return (seconds, last seq)."""
    started = time.monotonic()
    last = 0
    while time.monotonic() - started < timeout:
        posted = await in_thread(sender_node.post_message, token, ROOM, f"probe {label}")
        assert posted.status == 201, (posted.status, posted.body)
        last = posted.json()["seq"]
        if await receiver.poll_for(lambda e, s=last: e["type"] == "message" and e["seq"] >= s, timeout=0.7):
            return time.monotonic() - started, last
    return None, last


async def redis_restart_scenario(cluster: Cluster, redis: PrivateRedis) -> RedisRecord:
    a, b = cluster.nodes
    record = RedisRecord(cluster=cluster, pids=[n.process.pid for n in cluster.nodes])
    alice, bob, poster, late = (cluster.new_user(n) for n in ("alice", "bob", "poster", "late"))

    async with sockets_closed_at_exit() as opened:
        on_a, on_b = await open_socket(a, ROOM, alice), await open_socket(b, ROOM, bob)
        opened += [on_a, on_b]
        record.existing = {"alice on A": on_a, "bob on B": on_b}
        await on_a.send_message("before the restart")
        record.base = (await on_b.wait_for(lambda e: e["type"] == "message", what="cross-node delivery"))["seq"] - 1

        redis.stop()
        # --- Redis is down -------------------------------------------------------------------
        rest_jobs = {}
        for r in range(ROUNDS):
            await on_a.send_message(f"down, ws on A {r}", client_id=f"ws-a-{r}")
            await on_b.send_message(f"down, ws on B {r}", client_id=f"ws-b-{r}")
            for name, node in (("a", a), ("b", b)):
                cid = f"rest-{name}-{r}"
                rest_jobs[cid] = asyncio.ensure_future(
                    in_thread(node.post_message, poster.access_token, ROOM, f"down, REST on {name} {r}", cid)
                )
            await asyncio.sleep(0.3)
        for socket, side in ((on_a, "a"), (on_b, "b")):
            for r in range(ROUNDS):
                cid = f"ws-{side}-{r}"
                record.ws_answers[cid] = await socket.poll_for(
                    lambda e, c=cid: e.get("type") in ("message", "error") and e.get("client_id") == c,
                    timeout=ANSWER_TIMEOUT,
                )
        for cid, job in rest_jobs.items():
            record.rest_answers[cid] = await asyncio.wait_for(job, 60)
        for node in (a, b):
            response = await in_thread(health, node)
            record.healthz_down.append((response.status, json_or_none(response)))
        record.connect_down = await connect_outcome(a, ROOM, late, timeout=ANSWER_TIMEOUT)
        record.sockets_open_during_outage = {name: not s.closed.is_set() for name, s in record.existing.items()}

        redis.start()
        # --- Redis is back (empty) -------------------------------------------------------------
        record.healthy_after = await in_thread(wait_healthy, [a, b], timeout=RECOVERY_TIMEOUT)
        for label, node, token, receiver in (
            ("A to B", a, poster.access_token, on_b),
            ("B to A", b, poster.access_token, on_a),
        ):
            seconds, _ = await first_delivery(node, token, receiver, label=label, timeout=CROSS_NODE_BOUND)
            record.cross_node_after[label] = seconds

        sentinel = await in_thread(a.post_message, poster.access_token, ROOM, "sentinel")
        assert sentinel.status == 201, sentinel.body
        record.final = sentinel.json()["seq"]
        for socket in (on_a, on_b):
            await socket.poll_for(lambda e: e["type"] == "message" and e["seq"] >= record.final, timeout=15)

        # A client that was away reconnects with since= and gets what was persisted meanwhile.
        resumed = await open_socket(b, ROOM, late, since=record.base)
        opened.append(resumed)
        await resumed.poll_for(lambda e: e["type"] == "message" and e["seq"] >= record.final, timeout=15)
        record.replayed = resumed.messages()

        # Presence lives in Redis, which came back empty: the heartbeats must have rebuilt it.
        await asyncio.sleep(TTL / 3 + 0.5)
        carol = cluster.new_user("carol")
        fresh = await open_socket(a, ROOM, carol)
        opened.append(fresh)
        record.presence_after = fresh.events[0]
        record.presence_expected = sorted(
            (u.payload for u in (alice, bob, late, carol)), key=lambda u: u["username"].lower()
        )
        record.online_after = {"A": online_counts(a)[ROOM], "B": online_counts(b)[ROOM]}
        record.history = a.history_after(poster.access_token, ROOM, after=record.base)
    return record


@pytest.fixture(scope="module")
def restarted(tmp_path_factory, private_database_url, private_redis) -> Iterator[RedisRecord]:
    with running_cluster(
        tmp_path_factory.mktemp("redis-restart"),
        database_url=private_database_url,
        redis_url=private_redis.url,
        CHAT_PRESENCE_TTL_SECONDS=str(TTL),
    ) as cluster:
        try:
            record = asyncio.run(redis_restart_scenario(cluster, private_redis))
        finally:
            if private_redis.process is None or private_redis.process.poll() is not None:
                private_redis.start()
        yield record  # the nodes keep running while the tests look at them


def test_every_send_while_redis_is_down_is_acknowledged_or_refused_never_silently_dropped(restarted):
    stored = {m["client_id"]: m for m in restarted.history}
    silent = [cid for cid, answer in restarted.ws_answers.items() if answer is None]
    assert not silent, f"no message or error event within {ANSWER_TIMEOUT}s for {silent}"
    for cid, answer in restarted.ws_answers.items():
        if answer["type"] == "message":  # the acknowledgement: the message is stored
            assert as_event(stored[cid]) == answer
        else:
            assert answer["code"] == "unavailable", answer
    for cid, response in restarted.rest_answers.items():
        if response.status == 201:
            assert stored[cid] == response.json()
        else:
            assert response.status >= 500 and is_json_error(response), (cid, response.status, response.body)
    assert all(restarted.sockets_open_during_outage.values()), restarted.sockets_open_during_outage


def test_what_was_persisted_meanwhile_is_replayed_with_since_on_a_reconnect(restarted):
    assert [m["seq"] for m in restarted.history] == list(range(restarted.base + 1, restarted.final + 1))
    assert restarted.replayed == [as_event(m) for m in restarted.history]


def test_messages_sent_while_redis_is_down_are_persisted(restarted):
    # The database was up all along: a send is stored and acknowledged; only its broadcast may fail.
    stored = {m["client_id"] for m in restarted.history}
    answers = {cid: (a or {}).get("code", (a or {}).get("type")) for cid, a in restarted.ws_answers.items()}
    answers |= {cid: r.status for cid, r in restarted.rest_answers.items()}
    not_stored = {cid: answer for cid, answer in answers.items() if cid not in stored}
    assert not not_stored, f"sent while Redis was down and not stored (answer given): {not_stored}"


def test_nodes_recover_without_a_restart(restarted):
    assert [n.process.poll() for n in restarted.cluster.nodes] == [None, None]
    assert [n.process.pid for n in restarted.cluster.nodes] == restarted.pids
    assert restarted.healthy_after is not None and restarted.healthy_after <= RECOVERY_TIMEOUT
    for direction, seconds in restarted.cross_node_after.items():
        assert seconds is not None, f"no live delivery {direction} within {CROSS_NODE_BOUND}s of Redis returning"


def test_existing_sockets_miss_nothing_across_the_restart(restarted):
    expected = [as_event(m) for m in restarted.history]
    for name, socket in restarted.existing.items():
        assert socket.messages() == expected, f"{name}: {seqs(socket.events)}"


def test_healthz_answers_503_naming_the_channel_layer_while_redis_is_down(restarted):
    for status, body in restarted.healthz_down:
        assert (status, body) == (503, {"status": "unavailable", "database": "ok", "channel_layer": "unavailable"})


def test_a_new_connection_while_redis_is_down_is_served_or_told_to_retry(restarted):
    kind, detail = restarted.connect_down
    served = kind == "event" and detail["type"] == "presence"
    assert served or (kind, detail) == ("closed", 4500), restarted.connect_down


def test_presence_is_rebuilt_after_redis_comes_back_empty(restarted):
    assert restarted.presence_after == {"type": "presence", "room": ROOM, "users": restarted.presence_expected}
    assert restarted.online_after == {"A": 4, "B": 4}


def test_healthz_is_ok_again(restarted):
    for node in restarted.cluster.nodes:
        response = health(node)
        assert (response.status, response.json()) == (
            200,
            {"status": "ok", "database": "ok", "channel_layer": "ok"},
        )
