"""A real server keeps the chat moving while a registration or a login is hashing a password.

The server's hasher is held (gated_hasher.py), so the request is certainly still hashing while a
chat message goes round; nothing here depends on how long anything takes.
"""

import asyncio
import contextlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from tests.conftest import PASSWORD, launch_server

pytestmark = pytest.mark.server

ROOM = "general"
EVENT_TIMEOUT_SECONDS = 5.0


@pytest.fixture(scope="module")
def gate(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hashing-gate")


@pytest.fixture(scope="module")
def server(tmp_path_factory, gate):
    with launch_server(
        tmp_path_factory.mktemp("server"),
        DJANGO_SETTINGS_MODULE="accounts.tests.gated_settings",
        HASHING_GATE_DIR=str(gate),
    ) as running:
        yield running


@contextlib.contextmanager
def hashing_held(gate: Path):
    (gate / "closed").touch()
    try:
        yield
    finally:
        (gate / "closed").unlink()
        (gate / "entered").unlink(missing_ok=True)


async def hashing_begun(gate: Path) -> None:
    deadline = time.monotonic() + EVENT_TIMEOUT_SECONDS
    while not (gate / "entered").exists():
        assert time.monotonic() < deadline, "the request never began hashing"
        await asyncio.sleep(0.01)


async def next_event(ws) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), EVENT_TIMEOUT_SECONDS))


@pytest.mark.parametrize(("path", "status"), [("/register", 201), ("/token", 200)])
async def test_a_message_goes_round_while_a_password_is_being_hashed(server, gate, path, status):
    chatter = server.new_user("chatter")
    username = server.unique_username("hashing")
    if path == "/token":
        server.register(username)
    url = f"{server.ws_url}/ws/{ROOM}?token={chatter.access_token}"

    async with connect(url, proxy=None, open_timeout=10) as ws:
        assert (await next_event(ws))["type"] == "presence"
        assert (await next_event(ws))["type"] == "join"
        with ThreadPoolExecutor(1) as pool, hashing_held(gate):
            answer = pool.submit(server.post, path, json_body={"username": username, "password": PASSWORD})
            await hashing_begun(gate)

            # On SQLite a registration hashing inside its transaction would hold the write lock: the
            # message could not be stored until the hash was done.
            await ws.send(json.dumps({"type": "message", "content": "still here", "client_id": path}))
            event = await next_event(ws)

            assert (event["type"], event["content"], event["user"]) == ("message", "still here", chatter.payload)
            assert not answer.done()  # the password is still being hashed
        assert answer.result().status == status
