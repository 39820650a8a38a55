"""chat.layers.InProcessChannelLayer: channels' in-memory layer, its expiry sweep at most once per interval."""

import asyncio

from channels.layers import InMemoryChannelLayer

from chat.layers import InProcessChannelLayer


def test_the_sweep_runs_at_most_once_per_interval(monkeypatch):
    sweeps = []
    monkeypatch.setattr(InMemoryChannelLayer, "_clean_expired", lambda layer: sweeps.append(layer))
    layer = InProcessChannelLayer()
    layer.sweep_interval = 3600

    for _ in range(5):
        layer._clean_expired()
    assert sweeps == [layer]

    layer.sweep_interval = 0
    layer._clean_expired()
    assert sweeps == [layer, layer]


async def test_expired_messages_are_still_swept():
    layer = InProcessChannelLayer(expiry=0.05)
    layer.sweep_interval = 0.05
    await layer.send("one", {"type": "old"})
    await asyncio.sleep(0.1)
    await layer.send("one", {"type": "new"})

    assert await asyncio.wait_for(layer.receive("one"), 1) == {"type": "new"}


async def test_group_messages_still_reach_every_member():
    layer = InProcessChannelLayer()
    await layer.group_add("room.1", "a")
    await layer.group_add("room.1", "b")

    await layer.group_send("room.1", {"type": "chat.member", "text": "{}"})

    assert await layer.receive("a") == await layer.receive("b") == {"type": "chat.member", "text": "{}"}
