"""uvicorn's own lines about a socket (accepted, refused) carry the request target: no ticket or token
may reach them, however the query spells its name. The query parser decodes names, so `?tick%65t=`
and `?%74oken=` authenticate as `?ticket=` and `?token=` do.

One uvicorn server, logging at DEBUG so that the handshake's request line websockets logs is written
too, is connected to as clients would, then stopped; the tests read all it wrote.
"""

import asyncio
import json
import re
import time
from dataclasses import dataclass
from urllib.parse import unquote

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import launch_server

pytestmark = pytest.mark.server

EVENT_TIMEOUT_SECONDS = 5.0
LOG_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Connected:
    outcomes: dict[str, str]  # the first event type each socket received, or its handshake status
    secrets: list[str]
    socket_lines: list[str]  # uvicorn.error's lines about the sockets
    output: str  # all the server wrote, stdout and stderr


def percent_encoded(text: str) -> str:
    """Every character as a %XX escape."""
    return "".join(f"%{byte:02X}" for byte in text.encode())


async def first_event(url: str, origin: str | None = None) -> str:
    try:
        async with connect(url, origin=origin, proxy=None, open_timeout=10, close_timeout=5) as ws:
            return json.loads(await asyncio.wait_for(ws.recv(), EVENT_TIMEOUT_SECONDS))["type"]
    except InvalidStatus as refused:
        return str(refused.response.status_code)


@pytest.fixture(scope="module")
def connected(tmp_path_factory) -> Connected:
    with launch_server(tmp_path_factory.mktemp("redaction"), server_name="uvicorn", LOG_LEVEL="DEBUG") as server:
        user = server.new_user("redact")

        def ticket() -> str:
            response = server.post("/ws-ticket", token=user.access_token)
            assert response.status == 200, (response.status, response.body)
            return response.json()["ticket"]

        tickets = [ticket(), ticket()]
        url = f"{server.ws_url}/ws/general"
        queries = {
            "ticket, name escaped": f"?tick%65t={tickets[0]}",
            "token, every character escaped": f"?%74oken={percent_encoded(user.access_token)}",
            "token, plain": f"?token={user.access_token}",
        }
        outcomes = {name: asyncio.run(first_event(url + query)) for name, query in queries.items()}
        outcomes["foreign origin, ticket name escaped"] = asyncio.run(
            first_event(f"{url}?tick%65t={tickets[1]}", origin="http://evil.example.com")
        )
        deadline = time.monotonic() + LOG_TIMEOUT_SECONDS
        while server.log().count('"WebSocket /ws/general?') < len(outcomes) and time.monotonic() < deadline:
            time.sleep(0.1)
    # Read after the stop: a line the server buffered reaches the file only now.
    output = server.log()
    socket_lines = [
        record["event"]
        for record in map(json.loads, output.splitlines())
        if record["logger"] == "uvicorn.error" and '"WebSocket ' in record["event"]
    ]
    return Connected(
        outcomes=outcomes,
        secrets=[*tickets, user.access_token, user.access_token.split(".")[2]],
        socket_lines=socket_lines,
        output=output,
    )


def test_uvicorns_socket_lines_keep_the_query_with_the_secret_redacted(connected):
    targets = sorted(re.search(r'"WebSocket (\S+)"', line)[1] for line in connected.socket_lines)

    assert targets == [
        "/ws/general?%74oken=[REDACTED]",
        "/ws/general?tick%65t=[REDACTED]",
        "/ws/general?tick%65t=[REDACTED]",
        "/ws/general?token=[REDACTED]",
    ]


def test_no_ticket_or_token_reaches_the_output_in_any_spelling_though_each_let_its_socket_in(connected):
    assert connected.outcomes == {
        "ticket, name escaped": "presence",
        "token, every character escaped": "presence",
        "token, plain": "presence",
        "foreign origin, ticket name escaped": "403",
    }
    decoded = unquote(connected.output)
    for secret in connected.secrets:
        assert secret not in connected.output
        assert secret not in decoded
        assert percent_encoded(secret) not in connected.output
