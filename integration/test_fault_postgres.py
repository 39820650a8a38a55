"""PostgreSQL stops under two running nodes: clients are told, health says so, and both nodes heal.

The nodes share a private PostgreSQL (initdb + pg_ctl in a temporary folder) and a private Redis.
The scenario stops the database (a normal fast shutdown), sends over WebSocket and REST on both
nodes, asks /healthz, starts the database again and records what every client saw; each test checks
one promise. A short pool timeout (DATABASE_POOL_TIMEOUT) keeps each refused request short.
"""

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from integration.backends import PrivatePostgres
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
    running_cluster,
)
from tests.conftest import HttpResponse

POOL_TIMEOUT = 2  # seconds a request waits for a pooled connection before giving up
ANSWER_TIMEOUT = 20.0
RECOVERY_TIMEOUT = 30.0
ROOM = "general"


@dataclass
class PostgresRecord:
    cluster: Cluster
    pids: list[int] = field(default_factory=list)
    base: int = 0
    final: int = 0
    ws_answers: dict[str, dict | None] = field(default_factory=dict)
    rest_answers: dict[str, HttpResponse] = field(default_factory=dict)
    healthz_down: dict[str, tuple[int, object]] = field(default_factory=dict)
    connect_down: tuple[str, object] = ("", None)
    sockets_open_during_outage: dict[str, bool] = field(default_factory=dict)
    healthy_after: dict[str, float | None] = field(default_factory=dict)
    ws_after: dict[str, dict | None] = field(default_factory=dict)
    rest_after: dict[str, HttpResponse] = field(default_factory=dict)
    existing: dict[str, Socket] = field(default_factory=dict)
    connect_after: dict[str, tuple[str, object]] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)


async def healthy_within(node, timeout: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if (await in_thread(health, node, timeout=10)).status == 200:
                return time.monotonic() - started
        except OSError:
            pass
        await asyncio.sleep(0.25)
    return None


def answer_to(socket: Socket, client_id: str):
    return socket.poll_for(
        lambda e: e.get("type") in ("message", "error") and e.get("client_id") == client_id, timeout=ANSWER_TIMEOUT
    )


async def postgres_stop_scenario(cluster: Cluster, postgres: PrivatePostgres) -> PostgresRecord:
    a, b = cluster.nodes
    record = PostgresRecord(cluster=cluster, pids=[n.process.pid for n in cluster.nodes])
    alice, bob, poster, late = (cluster.new_user(n) for n in ("alice", "bob", "poster", "late"))

    async with sockets_closed_at_exit() as opened:
        on_a, on_b = await open_socket(a, ROOM, alice), await open_socket(b, ROOM, bob)
        opened += [on_a, on_b]
        record.existing = {"alice on A": on_a, "bob on B": on_b}
        await on_a.send_message("before the stop")
        record.base = (await on_b.wait_for(lambda e: e["type"] == "message", what="cross-node delivery"))["seq"] - 1

        await in_thread(postgres.stop)
        # --- PostgreSQL is down --------------------------------------------------------------
        await on_a.send_message("down, ws on A", client_id="ws-a-down")
        await on_b.send_message("down, ws on B", client_id="ws-b-down")
        rest = {
            "rest-a-down": in_thread(a.post_message, poster.access_token, ROOM, "down, REST on A", "rest-a-down"),
            "rest-b-down": in_thread(b.post_message, poster.access_token, ROOM, "down, REST on B", "rest-b-down"),
        }
        healthz = {"A": in_thread(health, a), "B": in_thread(health, b)}
        answers = await asyncio.gather(
            answer_to(on_a, "ws-a-down"),
            answer_to(on_b, "ws-b-down"),
            *rest.values(),
            *healthz.values(),
            connect_outcome(a, ROOM, late, timeout=ANSWER_TIMEOUT),
        )
        record.ws_answers = {"ws-a-down": answers[0], "ws-b-down": answers[1]}
        record.rest_answers = dict(zip(rest, answers[2:4], strict=True))
        record.healthz_down = {
            name: (response.status, json_or_none(response))
            for name, response in zip(healthz, answers[4:6], strict=True)
        }
        record.connect_down = answers[6]
        record.sockets_open_during_outage = {name: not s.closed.is_set() for name, s in record.existing.items()}

        await in_thread(postgres.start)
        # --- PostgreSQL is back ----------------------------------------------------------------
        recovered = await asyncio.gather(*(healthy_within(n, RECOVERY_TIMEOUT) for n in (a, b)))
        record.healthy_after = dict(zip(("A", "B"), recovered, strict=True))

        await on_a.send_message("up, ws on A", client_id="ws-a-up")
        await on_b.send_message("up, ws on B", client_id="ws-b-up")
        record.ws_after = {
            "ws-a-up": await answer_to(on_a, "ws-a-up"),
            "ws-b-up": await answer_to(on_b, "ws-b-up"),
        }
        for name, node in (("rest-a-up", a), ("rest-b-up", b)):
            record.rest_after[name] = await in_thread(node.post_message, poster.access_token, ROOM, name, name)
        sentinel = await in_thread(a.post_message, poster.access_token, ROOM, "sentinel")
        assert sentinel.status == 201, sentinel.body
        record.final = sentinel.json()["seq"]
        for socket in (on_a, on_b):
            await socket.poll_for(lambda e: e["type"] == "message" and e["seq"] >= record.final, timeout=15)
        for name, node in (("A", a), ("B", b)):
            record.connect_after[name] = await connect_outcome(node, ROOM, late, timeout=ANSWER_TIMEOUT)
        record.history = a.history_after(poster.access_token, ROOM, after=record.base)
    return record


@pytest.fixture(scope="module")
def stopped(tmp_path_factory, private_postgres, private_database_url, private_redis) -> Iterator[PostgresRecord]:
    with running_cluster(
        tmp_path_factory.mktemp("postgres-stop"),
        database_url=private_database_url,
        redis_url=private_redis.url,
        DATABASE_POOL_TIMEOUT=str(POOL_TIMEOUT),
    ) as cluster:
        try:
            record = asyncio.run(postgres_stop_scenario(cluster, private_postgres))
        finally:
            if not private_postgres.is_running():
                private_postgres.start()
        yield record  # the nodes keep running while the tests look at them


def test_websocket_sends_get_an_unavailable_error_while_postgresql_is_down(stopped):
    for client_id, answer in stopped.ws_answers.items():
        assert answer is not None, f"{client_id}: no event within {ANSWER_TIMEOUT}s"
        assert answer == {
            "type": "error",
            "code": "unavailable",
            "detail": answer.get("detail"),
            "client_id": client_id,
        }
    assert all(stopped.sockets_open_during_outage.values()), stopped.sockets_open_during_outage


def test_rest_sends_get_a_json_5xx_while_postgresql_is_down(stopped):
    for client_id, response in stopped.rest_answers.items():
        assert response.status >= 500, (client_id, response.status, response.body)
        assert is_json_error(response), (client_id, response.content_type, response.body[:300])


def test_healthz_answers_503_naming_the_database(stopped):
    for node, (status, body) in stopped.healthz_down.items():
        expected = {"status": "unavailable", "database": "unavailable", "channel_layer": "ok"}
        assert (status, body) == (503, expected), node


def test_a_new_connection_while_postgresql_is_down_closes_4500(stopped):
    # README, close codes: 4500 "the server could not reach its database or channel layer while you connected".
    assert stopped.connect_down == ("closed", 4500)


def test_both_nodes_recover_when_postgresql_returns(stopped):
    assert [n.process.pid for n in stopped.cluster.nodes] == stopped.pids
    assert [n.process.poll() for n in stopped.cluster.nodes] == [None, None]
    for node, seconds in stopped.healthy_after.items():
        assert seconds is not None, f"node {node}: /healthz not 200 within {RECOVERY_TIMEOUT}s of PostgreSQL's return"
    stored = {m["client_id"]: m for m in stopped.history}
    for client_id, answer in stopped.ws_after.items():
        assert answer is not None and answer["type"] == "message", (client_id, answer)
        assert answer == as_event(stored[client_id])
    for client_id, response in stopped.rest_after.items():
        assert response.status == 201, (client_id, response.status, response.body)
        assert response.json() == stored[client_id]
    for node, (kind, event) in stopped.connect_after.items():
        assert kind == "event" and event["type"] == "presence", (node, kind, event)


def test_nothing_refused_was_stored_and_sockets_miss_nothing(stopped):
    assert not {"ws-a-down", "ws-b-down", "rest-a-down", "rest-b-down"} & {m["client_id"] for m in stopped.history}
    assert [m["seq"] for m in stopped.history] == list(range(stopped.base + 1, stopped.final + 1))
    expected = [as_event(m) for m in stopped.history]
    for name, socket in stopped.existing.items():
        assert socket.messages() == expected, f"{name}: {seqs(socket.events)}"


def test_healthz_is_ok_again(stopped):
    for node in stopped.cluster.nodes:
        response = health(node)
        assert (response.status, response.json()) == (200, {"status": "ok", "database": "ok", "channel_layer": "ok"})
