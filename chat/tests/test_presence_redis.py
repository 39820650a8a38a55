"""RedisPresence against the machine's Redis, under a key prefix of its own per test."""

import asyncio
import contextlib
import json
import uuid

import pytest
import redis
from redis.asyncio.client import Pipeline

from chat.presence import InProcessPresence, TooManySockets
from chat.presence_redis import RedisPresence
from chatproject.logs import context_fields, log_context

REDIS_URL = "redis://127.0.0.1:6379/5"


@pytest.fixture
def make_presence():
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError:
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    made = []

    def make(ttl: int = 45) -> RedisPresence:
        presence = RedisPresence(url=REDIS_URL, prefix=prefix, ttl=ttl)
        made.append(presence)
        return presence

    yield make
    if made:
        made[0].clear()


@pytest.fixture
async def room_listener(settings):
    """An in-process layer and a channel in room 1's group: what the nodes announce there."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    layer = channel_layers["default"]
    listener = await layer.new_channel()
    await layer.group_add("room.1", listener)
    return layer, listener


def join(presence, user_id, channel, room_id=1, username=None, limit=0):
    return presence.connect(
        room_id=room_id,
        room_name=f"room{room_id}",
        user_id=user_id,
        username=username or f"u{user_id}",
        channel=channel,
        limit=limit,
    )


def stored(presence) -> dict[str, object]:
    """Every key under the node's prefix that stays until removed (the others expire), with its content."""
    sync = presence._sync
    keys = [key for key in sync.scan_iter(match=f"{presence.prefix}:*") if sync.ttl(key) == -1]
    read = {b"hash": sync.hgetall, b"zset": lambda key: sync.zrange(key, 0, -1)}
    return {key.decode(): read[sync.type(key)](key) for key in keys}


async def announced(layer, listener) -> list[dict]:
    events = []
    with contextlib.suppress(asyncio.TimeoutError):
        while True:
            event = json.loads((await asyncio.wait_for(layer.receive(listener), 0.3))["text"])
            events.append({k: v for k, v in event.items() if k != "timestamp"})
    return events


async def test_first_and_last_socket_are_reported_across_nodes(make_presence):
    node_a, node_b = make_presence(), make_presence()

    assert await join(node_a, 1, "a1") is True
    assert await join(node_b, 1, "b1") is False  # same user, other node: not a second join
    assert await join(node_b, 2, "b2") is True
    assert await node_a.users(room_id=1) == [{"id": 1, "username": "u1"}, {"id": 2, "username": "u2"}]
    assert node_b.online_counts([1, 2]) == {1: 2, 2: 0}

    assert await node_a.disconnect(room_id=1, user_id=1, channel="a1") is False
    assert await node_b.disconnect(room_id=1, user_id=1, channel="b1") is True
    assert await node_b.disconnect(room_id=1, user_id=1, channel="b1") is False  # only once
    assert await node_a.users(room_id=1) == [{"id": 2, "username": "u2"}]


async def test_a_dead_nodes_users_expire_and_their_leave_is_announced_once(make_presence, room_listener):
    layer, listener = room_listener

    dead, alive, other = make_presence(ttl=1), make_presence(ttl=1), make_presence(ttl=1)
    await join(dead, 7, "dead-1", username="ghost")
    await join(alive, 8, "alive-1", username="living")
    dead._heartbeat.cancel()  # the node is killed: no more heartbeats
    dead._local.clear()

    await asyncio.sleep(1.5)
    await alive.beat()  # refreshes its own socket, then sweeps
    await other.sweep()  # a second sweeper finds nothing left to announce

    assert await alive.users(room_id=1) == [{"id": 8, "username": "living"}]
    assert alive.online_counts([1]) == {1: 1}
    event = json.loads((await asyncio.wait_for(layer.receive(listener), 1))["text"])
    assert {k: v for k, v in event.items() if k != "timestamp"} == {
        "type": "leave",
        "room": "room1",
        "user": {"id": 7, "username": "ghost"},
    }
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(layer.receive(listener), 0.3)


async def test_a_stalled_nodes_user_swept_out_is_announced_joining_when_its_heartbeat_returns(
    make_presence, room_listener
):
    layer, listener = room_listener
    stalled, other = make_presence(ttl=1), make_presence(ttl=1)
    await join(stalled, 7, "s-1", username="sleepy")
    await join(stalled, 7, "s-2", username="sleepy")  # two sockets: still one join
    stalled._heartbeat.cancel()  # the node stops (SIGSTOP, a long pause) but keeps its sockets
    await asyncio.sleep(1.5)
    await other.sweep()
    sleepy = {"id": 7, "username": "sleepy"}
    assert await announced(layer, listener) == [{"type": "leave", "room": "room1", "user": sleepy}]

    await stalled.beat()  # it resumes: its sockets are back in the room, and so is the user
    assert await other.users(room_id=1) == [sleepy]
    assert await announced(layer, listener) == [{"type": "join", "room": "room1", "user": sleepy}]
    await stalled.beat()  # present all along from here: nothing more to announce
    assert await announced(layer, listener) == []


# In process, connect() holds a lock and never awaits: there the case checks the count and the refusal.
@pytest.mark.parametrize("store", ["redis, two nodes", "in process"])
async def test_sockets_connecting_at_once_never_pass_the_limit_together(make_presence, store):
    nodes = [make_presence(), make_presence()] if store.startswith("redis") else [InProcessPresence()]
    await join(nodes[0], 7, "first", limit=5)

    outcomes = await asyncio.gather(
        *[join(nodes[n % len(nodes)], 7, f"s{n}", room_id=n % 3, limit=5) for n in range(40)], return_exceptions=True
    )

    assert sum(1 for outcome in outcomes if isinstance(outcome, TooManySockets)) == 36
    assert all(isinstance(outcome, bool | TooManySockets) for outcome in outcomes)
    await nodes[0].disconnect(room_id=1, user_id=7, channel="first")
    assert await join(nodes[-1], 7, "after-one-left", limit=5) is False  # a place is free again
    with pytest.raises(TooManySockets):
        await join(nodes[0], 7, "one-too-many", limit=5)
    assert await join(nodes[0], 8, "someone-else", limit=5) is True


async def test_rooms_and_names_are_kept_only_while_someone_is_in_the_room(make_presence):
    node_a, node_b = make_presence(), make_presence()
    for room_id in range(1, 31):
        await join(node_a, room_id, f"a{room_id}", room_id=room_id)
        await join(node_b, 100 + room_id, f"b{room_id}", room_id=room_id)
        await join(node_b, room_id, f"b-again{room_id}", room_id=room_id)
    await join(node_a, 500, "stays", room_id=7, username="stayer")

    for room_id in range(1, 31):
        await node_a.disconnect(room_id=room_id, user_id=room_id, channel=f"a{room_id}")
        await node_b.disconnect(room_id=room_id, user_id=100 + room_id, channel=f"b{room_id}")
        await node_b.disconnect(room_id=room_id, user_id=room_id, channel=f"b-again{room_id}")

    prefix = node_a.prefix
    assert stored(node_a) == {
        f"{prefix}:rooms": {b"7": b"room7"},
        f"{prefix}:7:users": [b"500"],
        f"{prefix}:7:names": {b"500": b"stayer"},
    }
    assert await node_b.users(room_id=7) == [{"id": 500, "username": "stayer"}]

    await node_a.disconnect(room_id=7, user_id=500, channel="stays")
    assert list(node_a._sync.scan_iter(match=f"{prefix}:*")) == []  # nothing at all, expiring or not


async def test_the_sweep_walks_only_the_rooms_someone_is_in(make_presence, room_listener):
    layer, listener = room_listener
    dead, alive = make_presence(ttl=1), make_presence(ttl=1)
    for room_id in range(1, 21):
        await join(dead, room_id, f"dead-{room_id}", room_id=room_id, username="ghost")
    await join(alive, 8, "alive-1", username="living")
    dead._heartbeat.cancel()  # the node is killed: no more heartbeats
    dead._local.clear()
    swept = []
    sweep_script = alive._sweep_script

    async def counted_sweep_script(*, keys, args, client):
        swept.append(keys[0])
        return await sweep_script(keys=keys, args=args, client=client)

    alive._sweep_script = counted_sweep_script
    await asyncio.sleep(1.5)  # the ghost's entries expire; every room it was in is swept

    await alive.beat()
    ghost = {"id": 1, "username": "ghost"}
    assert await announced(layer, listener) == [{"type": "leave", "room": "room1", "user": ghost}]
    prefix = alive.prefix
    assert stored(alive) == {
        f"{prefix}:rooms": {b"1": b"room1"},
        f"{prefix}:1:users": [b"8"],
        f"{prefix}:1:names": {b"8": b"living"},
    }

    swept.clear()
    await alive.beat()
    assert set(swept) == {f"{prefix}:1:users"}  # set: the node's own heartbeat task may sweep meanwhile too


def pause_pipelines(monkeypatch) -> tuple[asyncio.Event, asyncio.Event]:
    """Every pipeline (the heartbeat's) waits at its round trip: the first event says one has come
    that far, setting the second lets it go on."""
    reached, go_on = asyncio.Event(), asyncio.Event()
    execute = Pipeline.execute

    async def paused_execute(pipe, *args, **kwargs):
        reached.set()
        await go_on.wait()
        return await execute(pipe, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "execute", paused_execute)
    return reached, go_on


async def test_a_socket_closing_while_the_heartbeat_is_under_way_stays_closed(
    make_presence, room_listener, monkeypatch
):
    layer, listener = room_listener
    node = make_presence()
    await join(node, 7, "c7", username="leaving")
    assert await announced(layer, listener) == []  # connect() alone announces nothing: its caller does
    heartbeat_sent, go_on = pause_pipelines(monkeypatch)
    beat = asyncio.create_task(node.beat())
    await heartbeat_sent.wait()  # the heartbeat has read this node's sockets, the close among them
    closing = asyncio.create_task(node.disconnect(room_id=1, user_id=7, channel="c7"))
    await asyncio.sleep(0.2)  # the close goes as far as it can while the heartbeat waits for Redis
    go_on.set()
    await beat

    assert await closing is True
    assert await node.users(room_id=1) == []
    assert await announced(layer, listener) == []  # no join for a socket already closed
    assert list(node._sync.scan_iter(match=f"{node.prefix}:*")) == []


async def test_a_socket_the_heartbeat_did_not_read_closes_without_waiting_for_it(make_presence, monkeypatch):
    # Closes wait only for a heartbeat that read them: a slow Redis must not queue every close of a node.
    node = make_presence()
    await join(node, 7, "c7")
    heartbeat_sent, go_on = pause_pipelines(monkeypatch)
    beat = asyncio.create_task(node.beat())
    await heartbeat_sent.wait()
    await join(node, 8, "c8")  # opened after the heartbeat read this node's sockets
    try:
        assert await asyncio.wait_for(node.disconnect(room_id=1, user_id=8, channel="c8"), timeout=2) is True
    finally:
        go_on.set()
        await beat
    assert await node.users(room_id=1) == [{"id": 7, "username": "u7"}]


async def test_heartbeat_keeps_a_live_socket_beyond_the_ttl(make_presence):
    node = make_presence(ttl=1)
    await join(node, 3, "c3")
    for _ in range(3):
        await asyncio.sleep(0.5)
        await node.beat()
    assert await node.users(room_id=1) == [{"id": 3, "username": "u3"}]


async def test_redis_down_answers_nobody_and_never_raises():
    presence = RedisPresence(url="redis://127.0.0.1:9/0", prefix="down", ttl=45)
    assert await join(presence, 1, "x") is False
    assert await presence.users(room_id=1) == []
    assert await presence.disconnect(room_id=1, user_id=1, channel="x") is False
    assert presence.online_counts([1]) == {}


async def test_the_heartbeat_does_not_carry_the_log_context_of_the_socket_that_started_it(make_presence):
    node = make_presence(ttl=1)
    contexts = []

    async def beat() -> None:
        contexts.append(context_fields())

    node.beat = beat
    with log_context(connection_id="the-first-socket", user_id=3):
        await join(node, 3, "c3")  # the first socket starts the heartbeat
    async with asyncio.timeout(5):
        while not contexts:
            await asyncio.sleep(0.05)
    assert contexts[0] == {}
