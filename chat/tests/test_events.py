"""chat.events.group_send: a channel layer that fails for want of its Redis is skipped for a while."""

import asyncio
import logging
from types import SimpleNamespace

import pytest
import redis
from channels.exceptions import ChannelFull
from channels_redis.pubsub import RedisPubSubChannelLayer

from chat import events


class FailingLayer:
    def __init__(self, *failures):
        self.failures = list(failures)  # raised in turn; None: the send goes through
        self.sent: list[str] = []

    async def group_send(self, group, message):
        failure = self.failures.pop(0) if self.failures else None
        if failure is not None:
            raise failure
        self.sent.append(group)


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(events, "time", SimpleNamespace(monotonic=lambda: now[0]))
    return now


def use(monkeypatch, layer):
    monkeypatch.setattr(events, "get_channel_layer", lambda: layer)


async def test_an_outage_pauses_sends_and_is_logged_when_it_begins_and_ends(monkeypatch, clock, caplog):
    refused = redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
    layer = FailingLayer(refused, refused, redis.TimeoutError("Timeout reading"), None)
    use(monkeypatch, layer)
    caplog.set_level(logging.WARNING, logger="chat.events")

    assert await events.group_send("room.1", {"type": "chat.member", "text": "{}"}) is False  # tried twice
    clock[0] += events.LAYER_PAUSE_SECONDS - 0.1
    assert [await events.group_send(f"room.{n}", {"type": "chat.member", "text": "{}"}) for n in (2, 3)] == [
        False,
        False,
    ]
    assert len(layer.failures) == 2  # the layer was not asked while paused
    clock[0] += 0.2
    assert await events.group_send("room.4", {"type": "chat.member", "text": "{}"}) is False  # no answer: once
    clock[0] += events.LAYER_PAUSE_SECONDS
    assert await events.group_send("room.5", {"type": "chat.member", "text": "{}"}) is True

    assert layer.sent == ["room.5"]
    assert [(r.levelname, r.getMessage(), r.exc_info is not None) for r in caplog.records] == [
        (
            "ERROR",
            "channel layer send to room.1 failed; sends skip the layer for 5 s at a time until it answers "
            "(sockets catch up from the database)",
            True,
        ),
        ("WARNING", "channel layer still unreachable (TimeoutError: Timeout reading)", False),
        ("WARNING", "channel layer reachable again; 4 sends skipped or failed meanwhile", False),
    ]
    clock[0] += 1
    layer.failures = [refused, refused]
    assert await events.group_send("room.6", {"type": "chat.member", "text": "{}"}) is False
    assert caplog.records[-1].levelname == "ERROR"  # a new incident


async def test_a_connection_redis_closed_is_tried_again_once_and_pauses_nothing(monkeypatch, clock, caplog):
    # What the first publish after a Redis restart meets: the pooled connection is gone.
    layer = FailingLayer(redis.ConnectionError("Connection closed by server."), None, None)
    use(monkeypatch, layer)

    assert await events.group_send("room.1", {"type": "chat.member", "text": "{}"}) is True
    assert await events.group_send("room.2", {"type": "chat.member", "text": "{}"}) is True
    assert (layer.sent, caplog.records) == (["room.1", "room.2"], [])


async def test_sends_waiting_behind_a_send_that_times_out_are_skipped_not_each_timed_out(monkeypatch, caplog):
    asked = []

    class HangingLayer:
        async def group_send(self, group, message):
            asked.append(group)
            await asyncio.sleep(0.2)  # the socket timeout
            raise redis.TimeoutError("Timeout reading")

    use(monkeypatch, HangingLayer())

    results = await asyncio.gather(
        *(events.group_send(f"room.{n}", {"type": "chat.member", "text": "{}"}) for n in range(8))
    )

    assert (results, asked) == ([False] * 8, ["room.0"])
    assert [r.levelname for r in caplog.records] == ["ERROR"]


async def test_a_failure_that_is_no_outage_is_logged_and_does_not_pause(monkeypatch, clock, caplog):
    layer = FailingLayer(ChannelFull(), None)
    use(monkeypatch, layer)

    assert await events.group_send("room.1", {"type": "chat.member", "text": "{}"}) is False
    assert await events.group_send("room.1", {"type": "chat.member", "text": "{}"}) is True
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [("ERROR", "channel layer send to room.1 failed")]


async def test_a_redis_that_accepts_and_never_answers_costs_one_timeout_not_one_per_send(monkeypatch):
    accepted = []

    async def never_answer(reader, writer):
        accepted.append(writer)
        await reader.read()  # hold the connection, answer nothing

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    # The layer as the settings build it (REDIS_TIMEOUT_SECONDS, shortened here).
    layer = RedisPubSubChannelLayer(
        hosts=[{"address": f"redis://127.0.0.1:{port}", "socket_timeout": 0.5, "socket_connect_timeout": 0.5}]
    )
    asked = []
    real = layer.group_send

    async def counting(group, message):
        asked.append(group)
        return await real(group, message)

    monkeypatch.setattr(layer, "group_send", counting)
    use(monkeypatch, layer)
    try:
        async with asyncio.timeout(10):  # without the socket timeout the publish waits for TCP to give up
            results = [await events.group_send(f"room.{n}", {"type": "chat.member", "text": "{}"}) for n in range(5)]
    finally:
        await layer.flush()
        for writer in accepted:
            writer.close()
        server.close()
    assert results == [False] * 5
    assert asked == ["room.0"]
    assert accepted  # it did reach the silent server
