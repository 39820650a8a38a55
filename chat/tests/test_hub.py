"""chat.hub: one layer subscription per process and group, delivery to local members, slow members isolated."""

import asyncio
import logging
import uuid

import pytest
import redis
from channels.layers import channel_layers, get_channel_layer

from chat.events import group_send
from chat.hub import Hub, run_eagerly
from chatproject.logs import context_fields, log_context

REDIS_URL = "redis://127.0.0.1:6379/5"


class Member:
    def __init__(self, gate: asyncio.Event | None = None) -> None:
        self.received: list[dict] = []
        self.gate = gate

    async def deliver(self, message: dict) -> None:
        if self.gate is not None:
            await self.gate.wait()
        self.received.append(message)


async def until(predicate, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


@pytest.fixture
async def layer():
    layer = get_channel_layer()
    await layer.flush()
    yield layer
    await layer.flush()


async def test_the_layer_holds_one_membership_per_process_however_many_members(layer):
    hub = Hub()
    members = [Member() for _ in range(50)]
    for member in members:
        await hub.subscribe("room.1", member)

    assert len(layer.groups["room.1"]) == 1
    assert await group_send("room.1", {"type": "chat.member", "text": "{}"})
    await until(lambda: all(m.received for m in members))
    assert all(m.received == [{"type": "chat.member", "text": "{}", "group": "room.1"}] for m in members)

    for member in members:
        await hub.unsubscribe("room.1", member)
    assert "room.1" not in layer.groups


async def test_a_member_only_hears_its_own_groups(layer):
    hub = Hub()
    in_one, in_two = Member(), Member()
    await hub.subscribe("room.1", in_one)
    await hub.subscribe("room.2", in_two)

    await group_send("room.2", {"type": "chat.member", "text": "two"})
    await until(lambda: in_two.received)
    await asyncio.sleep(0.05)

    assert (in_one.received, [m["text"] for m in in_two.received]) == ([], ["two"])


async def test_a_member_that_must_wait_does_not_hold_up_the_others(layer):
    hub = Hub()
    gate = asyncio.Event()
    slow, fast = Member(gate=gate), Member()
    await hub.subscribe("room.1", slow)
    await hub.subscribe("room.1", fast)

    for n in range(3):
        await group_send("room.1", {"type": "chat.member", "text": str(n)})
    await until(lambda: len(fast.received) == 3)
    assert slow.received == []

    gate.set()
    await until(lambda: len(slow.received) == 3)
    assert sorted(m["text"] for m in slow.received) == ["0", "1", "2"]


class SyncMember:
    """A member whose deliver is plain: None when done, or a coroutine for the hub to finish."""

    def __init__(self, gate: asyncio.Event | None = None) -> None:
        self.received: list[str] = []
        self.gate = gate

    def deliver(self, message: dict):
        if self.gate is None:
            self.received.append(message["text"])
            return None
        return self._later(message)

    async def _later(self, message: dict) -> None:
        await self.gate.wait()
        self.received.append(message["text"])


async def test_a_plain_deliver_is_done_at_once_or_finished_from_the_coroutine_it_returns(layer):
    hub = Hub()
    gate = asyncio.Event()
    at_once, later = SyncMember(), SyncMember(gate=gate)
    await hub.subscribe("room.1", at_once)
    await hub.subscribe("room.1", later)

    await hub.dispatch({"type": "chat.member", "text": "one", "group": "room.1"})
    assert (at_once.received, later.received) == (["one"], [])

    gate.set()
    await until(lambda: later.received == ["one"])


async def test_run_eagerly_finishes_a_coroutine_that_never_waits_without_a_task():
    done = []

    async def quick():
        done.append(True)
        return "ignored"

    assert run_eagerly(quick()) is None
    assert done == [True]


async def test_run_eagerly_hands_a_waiting_coroutine_to_a_task_that_finishes_it():
    gate, done = asyncio.Event(), []

    async def waits():
        await gate.wait()
        await asyncio.sleep(0)
        done.append(True)

    task = run_eagerly(waits())
    assert task is not None and done == []
    gate.set()
    await asyncio.wait_for(task, 5)
    assert done == [True]


class ContextMember:
    """Records the log context its deliveries run in."""

    def __init__(self) -> None:
        self.contexts: list[dict] = []

    def deliver(self, message: dict) -> None:
        self.contexts.append(context_fields())


async def test_deliveries_do_not_carry_the_log_context_of_the_socket_that_started_the_hub(layer):
    hub, member = Hub(), ContextMember()
    with log_context(connection_id="the-first-socket", user_id=1):
        await hub.subscribe("room.1", member)  # the first socket starts the hub's reader

    await group_send("room.1", {"type": "chat.member", "text": "{}"})
    await until(lambda: member.contexts)
    assert member.contexts == [{}]


class ContextRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, dict]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((record.levelname, context_fields()))


@pytest.fixture
def redis_pubsub_layer(settings):
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    name = f"test-hub-{uuid.uuid4().hex[:8]}"
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [{"address": REDIS_URL, "client_name": name}], "prefix": name},
        }
    }
    channel_layers.backends.clear()
    yield name, client
    channel_layers.backends.clear()


async def test_a_dropped_redis_connection_that_the_layer_heals_is_a_warning_without_a_sockets_context(
    redis_pubsub_layer,
):
    name, client = redis_pubsub_layer
    records = ContextRecords()
    logging.getLogger("channels_redis.pubsub").addHandler(records)
    hub, member = Hub(), ContextMember()
    try:
        with log_context(connection_id="the-first-socket", user_id=1):
            await hub.subscribe("room.1", member)
        killed = 0
        for entry in client.client_list():
            if entry["name"] == name:
                killed += client.client_kill_filter(_id=entry["id"])
        assert killed  # the layer's connection, and only it, was dropped

        await until(lambda: records.seen)
        assert records.seen[0] == ("WARNING", {})
        # Healed: the layer subscribes again and delivers.
        async with asyncio.timeout(10):
            while not member.contexts:
                await group_send("room.1", {"type": "chat.member", "text": "{}"})
                await asyncio.sleep(0.2)
        assert member.contexts[0] == {}
    finally:
        logging.getLogger("channels_redis.pubsub").removeHandler(records)
        await hub.unsubscribe("room.1", member)
        await get_channel_layer().flush()
