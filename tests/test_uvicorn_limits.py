"""What one client can make the uvicorn server hold: a request head of at most MAX_REQUEST_HEAD_BYTES
(answered 431 beyond it), and a WebSocket frame of at most settings.CHAT_MAX_FRAME_BYTES (closed with
1009 from the frame's header, before its payload is read). Requests and frames within them are served.
"""

import asyncio
import json
import socket
import struct

import pytest
from django.conf import settings
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from chatproject.uvicorn_http import MAX_REQUEST_HEAD_BYTES
from tests.conftest import launch_server

pytestmark = pytest.mark.server

ANSWER_TIMEOUT_SECONDS = 5.0
EVENT_TIMEOUT_SECONDS = 5.0
FRAME_LIMIT = settings.CHAT_MAX_FRAME_BYTES


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with launch_server(tmp_path_factory.mktemp("limits"), server_name="uvicorn") as running:
        yield running


def head(request_line: str, *headers: str, pad_to: int | None = None) -> bytes:
    """A request head (Connection: close unless one is given); with pad_to, an X-Pad header makes it
    exactly that many bytes."""
    connection = [] if any(header.startswith("Connection:") for header in headers) else ["Connection: close"]
    lines = [request_line, "Host: 127.0.0.1", *connection, *headers]
    written = "".join(f"{line}\r\n" for line in lines)
    if pad_to is not None:
        padding = pad_to - len(written) - len("X-Pad: \r\n\r\n")
        written += f"X-Pad: {'p' * padding}\r\n"
    return (written + "\r\n").encode()


def answer(server, data: bytes) -> str:
    """Send `data` as one write; the status code answered, "closed" when the connection ended without
    an answer, or "no answer" when none came in time."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=ANSWER_TIMEOUT_SECONDS) as client:
        try:
            client.sendall(data)
        except TimeoutError:
            return "no answer"
        except OSError:
            pass  # the server stopped reading and closed: its answer may still be readable
        received = b""
        try:
            while b"\r\n" not in received and (chunk := client.recv(65536)):
                received += chunk
        except TimeoutError:
            return "no answer"
        except OSError:
            pass  # reset after the server closed with our bytes unread
    return received.split(b" ", 2)[1].decode() if received.startswith(b"HTTP/1.1 ") else "closed"


def test_a_request_head_over_the_bound_is_refused_and_one_within_it_served(server):
    user = server.new_user("heads")
    bearer = f"Authorization: Bearer {user.access_token}"
    body = json.dumps({"content": "x" * (4 * MAX_REQUEST_HEAD_BYTES)}).encode()
    upgrade = [
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ]
    # Each line, and their number, within the bounds websockets sets a handshake.
    many_headers = [f"X-Many-{n}: {'m' * 700}" for n in range(100)]

    answers = {
        "ordinary": answer(server, head("GET /healthz HTTP/1.1", "Accept: */*", "User-Agent: limits-test")),
        "bearer token": answer(server, head("GET /users/me HTTP/1.1", bearer)),
        "body larger than the bound": answer(
            server,
            head(
                "POST /messages/general HTTP/1.1",
                bearer,
                "Content-Type: application/json",
                f"Content-Length: {len(body)}",
            )
            + body,
        ),
        "head of exactly the bound": answer(server, head("GET /healthz HTTP/1.1", pad_to=MAX_REQUEST_HEAD_BYTES)),
        "head one byte over": answer(server, head("GET /healthz HTTP/1.1", pad_to=MAX_REQUEST_HEAD_BYTES + 1)),
        "100 headers over the bound": answer(server, head("GET /healthz HTTP/1.1", *many_headers)),
        "upgrade over the bound": answer(server, head("GET /ws/general HTTP/1.1", *upgrade, *many_headers)),
    }

    assert answers == {
        "ordinary": "200",
        "bearer token": "200",
        "body larger than the bound": "400",  # read whole, refused by the application: too long a message
        "head of exactly the bound": "200",
        "head one byte over": "431",
        "100 headers over the bound": "431",
        "upgrade over the bound": "431",
    }
    assert server.get("/healthz").status == 200


def test_a_head_that_never_ends_is_refused_once_over_the_bound(server):
    endless = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Endless: " + b"e" * (16 * MAX_REQUEST_HEAD_BYTES)

    assert answer(server, endless) in ("431", "closed")
    assert server.get("/healthz").status == 200


def test_a_refused_head_is_answered_as_json_and_logged_without_its_content(server):
    secret = "s3cr3t-in-a-huge-header"
    with socket.create_connection(("127.0.0.1", server.port), timeout=ANSWER_TIMEOUT_SECONDS) as client:
        client.sendall(head("GET /healthz HTTP/1.1", f"X-Secret: {secret}", pad_to=MAX_REQUEST_HEAD_BYTES + 1))
        response = b""
        while chunk := client.recv(65536):
            response += chunk

    status_and_headers, _, body = response.partition(b"\r\n\r\n")
    status_line, *header_lines = status_and_headers.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in header_lines)
    assert status_line == "HTTP/1.1 431 Request Header Fields Too Large"
    assert json.loads(body) == {"detail": "Request header fields too large."}
    assert (headers["content-type"], headers["connection"]) == ("application/json", "close")
    assert headers["x-content-type-options"] == "nosniff"
    assert secret not in server.log()


async def close_code_or_event(ws) -> int | dict | str:
    try:
        return json.loads(await asyncio.wait_for(ws.recv(), EVENT_TIMEOUT_SECONDS))
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else "closed without a code"
    except TimeoutError:
        return "still open"


async def entered(server, prefix: str):
    user = server.new_user(prefix)
    ws = await connect(f"{server.ws_url}/ws/general?token={user.access_token}", proxy=None, open_timeout=10)
    assert (await close_code_or_event(ws))["type"] == "presence"
    assert (await close_code_or_event(ws))["type"] == "join"
    return ws


def masked_frame_header(length: int) -> bytes:
    """A final text frame's header announcing `length` bytes, masked with a zero key as a client must mask."""
    return struct.pack("!BBQ", 0x81, 0x80 | 127, length) + b"\x00\x00\x00\x00"


async def test_frames_up_to_the_limit_are_read_and_larger_ones_refused_from_their_header(server):
    outcomes = {}

    ws = await entered(server, "frames")
    await ws.send("a" * FRAME_LIMIT)
    outcomes["at the limit"] = (await close_code_or_event(ws))["code"]
    await ws.send(json.dumps({"type": "message", "content": "after the largest frame"}))
    outcomes["then a message"] = (await close_code_or_event(ws))["content"]
    await ws.close()

    ws = await entered(server, "frames")
    await ws.send("a" * (FRAME_LIMIT + 1))
    outcomes["one byte over"] = await close_code_or_event(ws)

    ws = await entered(server, "frames")
    ws.transport.write(masked_frame_header(16 * 1024 * 1024) + b"a" * 1024)  # the rest never comes
    outcomes["16 MiB announced, 1 KiB sent"] = await close_code_or_event(ws)

    assert outcomes == {
        "at the limit": "too_long",  # read whole, refused by the application: longer than a message may be
        "then a message": "after the largest frame",
        "one byte over": 1009,
        "16 MiB announced, 1 KiB sent": 1009,
    }
    assert server.get("/healthz").status == 200
