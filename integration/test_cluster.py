"""Two nodes on the machine's Redis and PostgreSQL behave as one server.

Every socket's events are kept in order (integration.clients.Socket), so a message delivered twice,
a join announced twice or an event out of order shows up in a whole-list comparison.
"""

import asyncio
import json
import threading
import time
from urllib.parse import urlparse

import psycopg

from integration.backends import SHARED_POSTGRES_PORT, postgres_admin
from integration.clients import (
    as_event,
    in_thread,
    member_events,
    open_socket,
    presence_users,
    seqs,
    sockets_closed_at_exit,
)
from integration.cluster import (
    LEDGER,
    POOL_MAX,
    online_counts,
)

SETTLE_SECONDS = 0.5  # time for a stray duplicate to arrive before whole-list comparisons


def presence(room, *users) -> dict:
    return {"type": "presence", "room": room, "users": presence_users(*users)}


def is_member(kind: str, user):
    return lambda e: e["type"] == kind and e["user"] == user.payload


async def test_a_message_sent_on_one_node_reaches_members_on_the_other_exactly_once(shared_cluster):
    cluster, room = shared_cluster, "general"
    alice, bob, carol = cluster.new_user("alice"), cluster.new_user("bob"), cluster.new_user("carol")
    base = cluster.a.last_seq(alice.access_token, room)

    async with sockets_closed_at_exit() as opened:
        a = await open_socket(cluster.a, room, alice)
        opened.append(a)
        await a.wait_for(is_member("join", alice), what="alice's own join")
        b = await open_socket(cluster.b, room, bob)
        opened.append(b)
        # Presence is cluster-wide: bob, on node B, sees alice, who is on node A.
        assert b.events[0] == presence(room, alice, bob)
        await a.wait_for(is_member("join", bob), what="bob's join, announced on node B")
        await b.wait_for(is_member("join", bob), what="bob's own join")
        assert online_counts(cluster.a)[room] == online_counts(cluster.b)[room] == 2

        await a.ws.send(json.dumps({"type": "typing"}))
        await b.wait_for(lambda e: e["type"] == "typing", what="alice typing, from node A")

        await a.send_message("over the socket on A", client_id="a-1")
        await b.wait_for_seq(base + 1)
        on_b = await in_thread(cluster.b.post_message, carol.access_token, room, "REST on B", "c-1")
        on_a = await in_thread(cluster.a.post_message, carol.access_token, room, "REST on A", "c-2")
        assert (on_b.status, on_a.status) == (201, 201), (on_b.body, on_a.body)
        await b.send_message("over the socket on B", client_id="b-1")
        await b.wait_for_client_id("b-1")
        sentinel = await in_thread(cluster.a.post_message, carol.access_token, room, "sentinel")
        assert sentinel.status == 201, sentinel.body
        last = base + 5
        assert sentinel.json()["seq"] == last
        await a.wait_for_seq(last)
        await b.wait_for_seq(last)
        await asyncio.sleep(SETTLE_SECONDS)

        history = cluster.b.history_after(carol.access_token, room, after=base)
        assert [(m["content"], m["user"]["username"]) for m in history] == [
            ("over the socket on A", alice.username),
            ("REST on B", carol.username),
            ("REST on A", carol.username),
            ("over the socket on B", bob.username),
            ("sentinel", carol.username),
        ]
        expected = [as_event(m) for m in history]
        assert a.messages() == expected, "node A's socket: every message once, in seq order"
        assert b.messages() == expected, "node B's socket: every message once, in seq order"
        assert [e["type"] for e in a.events] == ["presence", "join", "join", *["message"] * 5]
        assert [e["type"] for e in b.events] == ["presence", "join", "typing", *["message"] * 5]

        mark = len(a.events)
        await b.close()
        leave = await a.wait_for(is_member("leave", bob), what="bob's leave, from node B", start=mark)
        assert leave["room"] == room
        assert online_counts(cluster.a)[room] == online_counts(cluster.b)[room] == 1
        await asyncio.sleep(SETTLE_SECONDS)
        assert a.events[mark:] == [leave]


async def test_a_user_with_a_socket_on_each_node_joins_once_and_leaves_when_the_last_one_closes(shared_cluster):
    cluster, room = shared_cluster, "python"
    watcher, dora = cluster.new_user("watcher"), cluster.new_user("dora")

    async with sockets_closed_at_exit() as opened:
        w = await open_socket(cluster.a, room, watcher)
        opened.append(w)
        await w.wait_for(is_member("join", watcher), what="the watcher's own join")
        dora_a = await open_socket(cluster.a, room, dora)
        opened.append(dora_a)
        await w.wait_for(is_member("join", dora), what="dora's join")
        dora_b = await open_socket(cluster.b, room, dora)
        opened.append(dora_b)
        assert dora_b.events == [presence(room, dora, watcher)]
        assert online_counts(cluster.a)[room] == online_counts(cluster.b)[room] == 2

        async def next_is_only_a_message(marks: dict) -> None:
            """Post a sentinel: it must be the only event every socket got since `marks`."""
            posted = await in_thread(cluster.a.post_message, watcher.access_token, room, "sentinel")
            assert posted.status == 201, posted.body
            seq = posted.json()["seq"]
            for socket in marks:
                if not socket.closed.is_set():
                    await socket.wait_for_seq(seq)
            await asyncio.sleep(SETTLE_SECONDS)
            for socket, mark in marks.items():
                got = socket.events[mark:]
                expected = [as_event(posted.json())] if not socket.closed.is_set() else []
                assert got == expected, f"{socket.label}: no join or leave expected, got {got}"

        # Dora's second socket, on the other node, announces nothing.
        await next_is_only_a_message({w: len(w.events), dora_a: len(dora_a.events), dora_b: len(dora_b.events)})

        # Closing one of her two sockets announces nothing either: she is still online through node B.
        await dora_a.close()
        await next_is_only_a_message({w: len(w.events), dora_b: len(dora_b.events)})
        assert online_counts(cluster.a)[room] == online_counts(cluster.b)[room] == 2

        mark = len(w.events)
        await dora_b.close()
        await w.wait_for(is_member("leave", dora), what="dora's leave when her last socket closed", start=mark)
        await asyncio.sleep(SETTLE_SECONDS)
        assert len(member_events(w, "join", dora)) == 1
        assert len(member_events(w, "leave", dora)) == 1
        assert [e["type"] for e in w.events[mark:]] == ["leave"]
        assert online_counts(cluster.a)[room] == online_counts(cluster.b)[room] == 1


async def test_concurrent_sends_from_both_nodes_get_gapless_unique_seqs(shared_cluster):
    cluster, room = shared_cluster, "random"
    users = [cluster.new_user(f"writer{i}") for i in range(4)]
    base = cluster.a.last_seq(users[0].access_token, room)
    assert base == 0, "no other test writes to this room: its seqs start at 1"
    per_writer = 2
    nodes = {"A": cluster.a, "B": cluster.b}
    ws_writers = [(f"ws-{n}-{k}", n, users[k % len(users)]) for n in nodes for k in range(5)]
    rest_writers = [(f"rest-{n}-{k}", n, users[(k + 1) % len(users)]) for n in nodes for k in range(5)]
    total = (len(ws_writers) + len(rest_writers)) * per_writer
    start = threading.Event()

    def rest_writer(name: str, node_name: str, user) -> list:
        start.wait(30)
        return [
            nodes[node_name].post_message(user.access_token, room, f"{name} #{i}", f"{name}-{i}")
            for i in range(per_writer)
        ]

    async with sockets_closed_at_exit() as opened:
        sockets = []
        for name, node_name, user in ws_writers:
            socket = await open_socket(nodes[node_name], room, user)
            opened.append(socket)
            sockets.append((name, socket))
        rest_results = [asyncio.ensure_future(in_thread(rest_writer, *writer)) for writer in rest_writers]
        start.set()
        for name, socket in sockets:
            for i in range(per_writer):
                await socket.send_message(f"{name} #{i}", client_id=f"{name}-{i}")
        responses = await asyncio.wait_for(asyncio.gather(*rest_results), 60)
        for _, socket in sockets:
            await socket.wait_for_seq(base + total, timeout=30)
        await asyncio.sleep(SETTLE_SECONDS)

        history = cluster.a.history_after(users[0].access_token, room, after=base)
        assert [m["seq"] for m in history] == list(range(base + 1, base + total + 1))
        by_client_id = {m["client_id"]: m for m in history}
        expected_ids = {f"{name}-{i}" for name, _, _ in ws_writers + rest_writers for i in range(per_writer)}
        assert set(by_client_id) == expected_ids and len(history) == total

        for (name, _, user), answers in zip(rest_writers, responses, strict=True):
            for i, response in enumerate(answers):
                assert response.status == 201, (name, response.status, response.body)
                assert response.json() == by_client_id[f"{name}-{i}"]
                assert response.json()["user"] == user.payload
        expected_events = [as_event(m) for m in history]
        for name, socket in sockets:
            # Each socket, whichever node it is on, got the whole room once, in seq order.
            assert socket.messages() == expected_events, f"{name} on {socket.label}: {seqs(socket.events)}"


async def test_client_id_idempotency_holds_across_nodes(shared_cluster):
    cluster, room = shared_cluster, "frontend"
    user, watcher = cluster.new_user("idem"), cluster.new_user("watcher")

    async with sockets_closed_at_exit() as opened:
        on_a = await open_socket(cluster.a, room, user)
        on_b = await open_socket(cluster.b, room, user)
        watching = await open_socket(cluster.b, room, watcher)
        opened += [on_a, on_b, watching]
        # Joins in, before the marks below: a late one would land among the events compared at the end.
        await on_a.wait_for(is_member("join", user), what="idem's own join")
        for socket in (on_a, on_b, watching):
            await socket.wait_for(is_member("join", watcher), what="the watcher's join")
        base = cluster.a.last_seq(user.access_token, room)

        await on_a.send_message("first text", client_id="same-1")
        original = await on_a.wait_for_client_id("same-1")
        assert original["type"] == "message" and original["seq"] == base + 1, original
        for socket in (on_b, watching):
            assert await socket.wait_for_seq(base + 1) == original
        marks = {s: len(s.events) for s in (on_a, on_b, watching)}

        # The same client_id through the other node: the original again, to that socket alone.
        await on_b.send_message("second text", client_id="same-1")
        assert await on_b.wait_for_client_id("same-1", start=marks[on_b]) == original
        repeated = await in_thread(cluster.b.post_message, user.access_token, room, "third text", "same-1")
        assert (repeated.status, as_event(repeated.json())) == (200, original)

        first_rest = await in_thread(cluster.a.post_message, user.access_token, room, "over REST", "rest-1")
        assert first_rest.status == 201, first_rest.body
        second_rest = await in_thread(cluster.b.post_message, user.access_token, room, "other text", "rest-1")
        assert (second_rest.status, second_rest.json()) == (200, first_rest.json())

        # Racing: the same client_id posted on both nodes at once stores one row; both get it.
        barrier = threading.Barrier(10, timeout=30)

        def post_racing(node, client_id):
            barrier.wait()
            return node.post_message(user.access_token, room, f"race {client_id}", client_id)

        racers = [(node, f"race-{k}") for k in range(5) for node in (cluster.a, cluster.b)]
        raced = await asyncio.gather(*(in_thread(post_racing, node, cid) for node, cid in racers))
        for k in range(5):
            pair = [r for (_, cid), r in zip(racers, raced, strict=True) if cid == f"race-{k}"]
            assert sorted(r.status for r in pair) == [200, 201], [(r.status, r.body) for r in pair]
            assert pair[0].json() == pair[1].json()

        sentinel = await in_thread(cluster.a.post_message, watcher.access_token, room, "sentinel")
        last = sentinel.json()["seq"]
        history = cluster.a.history_after(user.access_token, room, after=base)
        assert [m["client_id"] for m in history[:2]] == ["same-1", "rest-1"]
        assert sorted(m["client_id"] for m in history[2:7]) == [f"race-{k}" for k in range(5)]
        assert history[7]["client_id"] is None and len(history) == 8
        assert last == base + 8
        for socket in (on_a, on_b, watching):
            await socket.wait_for_seq(last)
        await asyncio.sleep(SETTLE_SECONDS)
        broadcast = [as_event(m) for m in history[1:]]
        assert on_a.events[marks[on_a] :] == broadcast
        assert watching.events[marks[watching] :] == broadcast
        assert on_b.events[marks[on_b] :] == [original, *broadcast]


PROBE_SETTINGS = """
import json
from django.conf import settings
from django.db import connection
db = settings.DATABASES["default"]
pool = connection.pool
print(json.dumps({
    "ENGINE": db["ENGINE"],
    "CONN_MAX_AGE": db["CONN_MAX_AGE"],
    "CONN_HEALTH_CHECKS": db["CONN_HEALTH_CHECKS"],
    "pool": db["OPTIONS"].get("pool"),
    "pool_class": f"{type(pool).__module__}.{type(pool).__name__}",
    "max_size": pool.max_size,
}))
"""


async def test_each_node_keeps_its_postgresql_connections_within_its_pool(shared_cluster):
    cluster, room = shared_cluster, "general"
    probe = cluster.a.manage("shell", "-c", PROBE_SETTINGS)
    assert probe.returncode == 0, probe.stderr
    configured = json.loads(probe.stdout.strip().splitlines()[-1])
    pool_options = configured.pop("pool")
    # Django's OPTIONS["pool"] with psycopg's pool; no persistent connections, health checks on.
    assert configured == {
        "ENGINE": "django.db.backends.postgresql",
        "CONN_MAX_AGE": 0,
        "CONN_HEALTH_CHECKS": True,
        "pool_class": "psycopg_pool.pool.ConnectionPool",
        "max_size": POOL_MAX,
    }
    assert (pool_options["min_size"], pool_options["max_size"]) == (1, POOL_MAX), pool_options

    dbname = urlparse(cluster.database_url).path.lstrip("/")
    users = [cluster.new_user(f"load{i}") for i in range(4)]
    stop = threading.Event()
    samples: list[dict[str, set[int]]] = []

    def sample() -> None:
        with postgres_admin(SHARED_POSTGRES_PORT) as admin:
            while not stop.is_set():
                rows = admin.execute(
                    "SELECT application_name, pid FROM pg_stat_activity "
                    "WHERE datname = %s AND application_name LIKE 'chat-it-node-%%'",
                    (dbname,),
                ).fetchall()
                by_node: dict[str, set[int]] = {}
                for app, pid in rows:
                    by_node.setdefault(app, set()).add(pid)
                samples.append(by_node)
                time.sleep(0.02)

    def load(node, user, n) -> list[int]:
        statuses = []
        for i in range(4):
            if i % 2:
                statuses.append(node.get(f"/messages/{room}?limit=20", token=user.access_token).status)
            else:
                statuses.append(node.post_message(user.access_token, room, f"load {n}.{i}").status)
        return statuses

    sampler = threading.Thread(target=sample, name="pg_stat_activity sampler")
    sampler.start()
    try:
        jobs = [in_thread(load, node, users[n % len(users)], n) for n in range(12) for node in (cluster.a, cluster.b)]
        statuses = await asyncio.wait_for(asyncio.gather(*jobs), 60)
    finally:
        stop.set()
        sampler.join(10)
    assert all(s in (200, 201) for batch in statuses for s in batch), statuses

    for node in ("chat-it-node-a", "chat-it-node-b"):
        peak = max(len(s.get(node, ())) for s in samples)
        seen = set().union(*(s.get(node, set()) for s in samples))
        assert 1 <= peak <= POOL_MAX, f"{node}: {peak} connections at once ({len(samples)} samples)"
        # The pool hands the same connections out again: no connection per request or per thread.
        assert len(seen) <= POOL_MAX, f"{node}: {len(seen)} different backends under load: {sorted(seen)}"


def test_nodes_share_one_postgresql_database(shared_cluster):
    """Both nodes answer from the same rows: a user registered on A logs in on B."""
    cluster = shared_cluster
    user = cluster.new_user("shared", node=cluster.a)
    tokens = cluster.b.login(user.username)
    LEDGER.add_tokens(tokens["access_token"], tokens["refresh_token"])
    me = cluster.b.get("/users/me", token=user.access_token)
    assert me.status == 200 and me.json()["id"] == user.id
    with psycopg.connect(cluster.database_url.replace("postgres://", "postgresql://"), connect_timeout=5) as conn:
        assert conn.execute("SELECT username FROM accounts_user WHERE id = %s", (user.id,)).fetchone() == (
            user.username,
        )
