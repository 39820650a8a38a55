"""Compare channels-redis layers for the chat's pattern: one group_send fanned out to N members.

Usage: .venv/bin/python bench/layers.py [redis_url] [members] [messages]
Prints deliveries/s for RedisChannelLayer and RedisPubSubChannelLayer on the same Redis.
"""

import asyncio
import sys
import time

from channels_redis.core import RedisChannelLayer
from channels_redis.pubsub import RedisPubSubChannelLayer


async def run(layer, members: int, messages: int) -> float:
    channels = [await layer.new_channel() for _ in range(members)]
    for channel in channels:
        await layer.group_add("bench", channel)
    received = 0

    async def drain(channel):
        nonlocal received
        for _ in range(messages):
            await layer.receive(channel)
            received += 1

    readers = [asyncio.create_task(drain(c)) for c in channels]
    await asyncio.sleep(0.2)
    started = time.perf_counter()
    for n in range(messages):
        await layer.group_send("bench", {"type": "chat.message", "seq": n, "text": "x" * 200})
    await asyncio.wait_for(asyncio.gather(*readers), 120)
    elapsed = time.perf_counter() - started
    for channel in channels:
        await layer.group_discard("bench", channel)
    await layer.flush()
    return received / elapsed


async def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else "redis://127.0.0.1:6379/7"
    members = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    messages = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    for name, layer in [
        ("RedisChannelLayer", RedisChannelLayer(hosts=[url], capacity=5000)),
        ("RedisPubSubChannelLayer", RedisPubSubChannelLayer(hosts=[url])),
    ]:
        rate = await run(layer, members, messages)
        print(f"{name:26s} {members} members x {messages} messages: {rate:,.0f} deliveries/s")


if __name__ == "__main__":
    asyncio.run(main())
