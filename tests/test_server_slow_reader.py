"""A client that stops reading must not hold up anyone else on its server process.

The stalled client is a plain TCP socket with a tiny receive buffer that completes the WebSocket
handshake and then never reads again. More is sent to the room than the kernel buffers between the
two can hold, so the server's own buffer for that socket must fill and its sends must wait; the
reading member still gets every message, in order.
"""

import asyncio
import base64
import json
import os
import socket
from pathlib import Path
from urllib.parse import urlencode

import pytest
from websockets.asyncio.client import connect

pytestmark = pytest.mark.server

MESSAGE_CHARS = 4000  # CHAT_MAX_MESSAGE_LENGTH
STALLED_RECEIVE_BUFFER = 4096


def kernel_send_buffer_max() -> int:
    """The most a TCP socket's send buffer can grow to (tcp_wmem's maximum)."""
    try:
        return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    except (OSError, IndexError, ValueError):
        return 4 * 1024 * 1024


def stalled_socket(server, room: str, token: str) -> socket.socket:
    """Open a room's WebSocket by hand, read the handshake answer, then never read again."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, STALLED_RECEIVE_BUFFER)
    sock.connect(("127.0.0.1", server.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws/{room}?{urlencode({'token': token})} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    answer = b""
    sock.settimeout(10)
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(1)  # byte by byte: nothing after the headers is taken off the wire
    assert answer.startswith(b"HTTP/1.1 101"), answer
    return sock


async def test_a_member_that_stops_reading_does_not_hold_up_the_room(server):
    room = "general"
    writer, reader, stalled = server.new_user("writer"), server.new_user("reader"), server.new_user("stalled")
    base = server.last_seq(writer.access_token, room)
    # Enough to overflow both kernel buffers many times over: the server must buffer and wait.
    count = 3 * (kernel_send_buffer_max() + STALLED_RECEIVE_BUFFER) // MESSAGE_CHARS + 1
    stuck = stalled_socket(server, room, stalled.access_token)
    try:
        url = f"{server.ws_url}/ws/{room}?{urlencode({'token': reader.access_token})}"
        async with connect(url, proxy=None, max_size=None) as listening:
            url = f"{server.ws_url}/ws/{room}?{urlencode({'token': writer.access_token})}"
            async with connect(url, proxy=None, max_size=None) as sending:

                async def send_all():
                    for n in range(count):
                        await sending.send(
                            json.dumps({"type": "message", "content": f"{n:06d}".ljust(MESSAGE_CHARS, ".")})
                        )
                        # Closed loop on the sender's own copy: the server is never asked to queue sends.
                        while json.loads(await asyncio.wait_for(sending.recv(), 10))["type"] != "message":
                            pass

                async def receive_all() -> list[int]:
                    seqs = []
                    while len(seqs) < count:
                        event = json.loads(await asyncio.wait_for(listening.recv(), 10))
                        if event["type"] == "message":
                            seqs.append(event["seq"])
                    return seqs

                _, seqs = await asyncio.gather(send_all(), receive_all())
        assert seqs == list(range(base + 1, base + count + 1))
    finally:
        stuck.close()
