"""The reference the benchmark compares the chat server with: a bare `websockets` broadcast relay.

No auth, no database, no JSON parsing: each text frame a client sends is broadcast, unchanged, to every
client connected on the same path (sender included), the path standing in for the chat's room. One
process, one event loop, permessage-deflate off (the benchmark clients turn it off for both servers).

Usage: .venv/bin/python bench/reference.py [--host 127.0.0.1] [--port 8765]
"""

import argparse
import asyncio
from collections import defaultdict

from websockets.asyncio.server import ServerConnection, broadcast, serve

rooms: dict[str, set[ServerConnection]] = defaultdict(set)


async def relay(websocket: ServerConnection) -> None:
    path = websocket.request.path.split("?", 1)[0]
    members = rooms[path]
    members.add(websocket)
    try:
        async for frame in websocket:
            if isinstance(frame, str):
                broadcast(members, frame)
    finally:
        members.discard(websocket)


async def main(host: str, port: int) -> None:
    async with serve(relay, host, port, compression=None, ping_interval=None, max_queue=None) as server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.host, arguments.port))
