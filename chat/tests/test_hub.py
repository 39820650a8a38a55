"""chat.hub: one layer subscription per process and group, delivery to local members, slow members isolated."""

import asyncio

import pytest
from channels.layers import get_channel_layer

from chat.events import group_send
from chat.hub import Hub, run_eagerly


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
