"""The real server's log: one JSON object per line, auth failures with their code, and never a token.

One server is exercised as clients would use it (register, log in, REST with Bearer and with ?token=,
refresh, logout, sockets with good and refused tokens), then stopped; every test reads all it wrote.
"""

import asyncio
import json
import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import PASSWORD, launch_server

pytestmark = pytest.mark.server

LOG_TIMEOUT_SECONDS = 10.0
CLIENT_REQUEST_ID = "logging-test-0001"


@dataclass(frozen=True)
class Exercised:
    user_id: int
    secrets: list[str]  # every token and password a client sent or received
    refused: dict[str, str]  # the reason logged for each refused socket token, by name
    close_codes: dict[str, int | None]
    headers: dict[str, dict[str, str]]
    log: str


def expired_token(server, access_token: str) -> str:
    """A token signed with the server's own key whose only fault is its expiry."""
    claims = jwt.decode(access_token, options={"verify_signature": False})
    claims["exp"] = int((datetime.now(UTC) - timedelta(minutes=5)).timestamp())
    key = (server.workdir / "secret_key").read_text().strip()
    return jwt.encode(claims, key, algorithm="HS256")


async def close_code(server, path: str, token: str | None) -> int | None:
    """Connect, read until the server closes (or say goodbye after the presence event), return the code."""
    url = f"{server.ws_url}{path}" + (f"?{urlencode({'token': token, 'since': 0})}" if token is not None else "")
    async with connect(url, proxy=None, open_timeout=10, close_timeout=5) as ws:
        try:
            event = json.loads(await asyncio.wait_for(ws.recv(), 5))
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None
        assert event["type"] == "presence", event
    return 1000


async def exercise_sockets(server, tokens: dict[str, str | None]) -> dict[str, int | None]:
    return {name: await close_code(server, path, token) for name, (path, token) in tokens.items()}


def wait_for_log(server, ready) -> None:
    """Give the server time to log what the clients did before it is stopped."""
    deadline = time.monotonic() + LOG_TIMEOUT_SECONDS
    while not ready(server.log()) and time.monotonic() < deadline:
        time.sleep(0.1)


@pytest.fixture(scope="module", params=["uvicorn", "daphne"])
def exercised(request, tmp_path_factory) -> Exercised:
    with launch_server(tmp_path_factory.mktemp("logging"), server_name=request.param) as server:
        alice = server.new_user("logs")
        bob = server.new_user("logs")
        me = server.get("/users/me", token=alice.access_token, headers={"X-Request-ID": CLIENT_REQUEST_ID})
        query_only = server.get(f"/messages/general?token={alice.access_token}")
        both = server.get(f"/messages/general?token={alice.access_token}&limit=5", token=alice.access_token)
        posted = server.post_message(alice.access_token, "general", "hello from the logging test")
        refreshed = server.post("/token/refresh", json_body={"refresh_token": alice.refresh_token})
        pair = refreshed.json()
        logout = server.post("/logout", json_body={"refresh_token": pair["refresh_token"]}, token=pair["access_token"])
        bad_bearer = bob.access_token[:-4] + ("AAAA" if not bob.access_token.endswith("AAAA") else "BBBB")
        refused_bearer = server.get("/users/me", token=bad_bearer)
        token_as_request_id = server.get("/rooms", headers={"X-Request-ID": bob.refresh_token[:100]})
        responses = [me, query_only, both, posted, refreshed, logout, refused_bearer, token_as_request_id]
        assert [response.status for response in responses] == [200, 401, 200, 201, 200, 204, 401, 200]
        headers = {"me": me.headers, "token-as-request-id": token_as_request_id.headers}

        header, _, signature = alice.access_token.split(".")
        someone_else = jwt.decode(bob.access_token, options={"verify_signature": False})
        forged_payload = jwt.utils.base64url_encode(json.dumps(someone_else).encode()).decode()
        refused_tokens = {
            "missing": None,
            "malformed": f"not-a-jwt-{uuid.uuid4().hex}",
            "tampered": f"{header}.{forged_payload}.{signature}",
            "refresh": bob.refresh_token,
            "expired": expired_token(server, bob.access_token),
        }
        sockets = {name: ("/ws/general", token) for name, token in refused_tokens.items()}
        sockets["good"] = ("/ws/general", bob.access_token)
        sockets["unknown room"] = (f"/ws/no-such-room-{uuid.uuid4().hex[:6]}", alice.access_token)
        close_codes = asyncio.run(exercise_sockets(server, sockets))

        wait_for_log(
            server,
            lambda text: (
                text.count('"ws.auth_refused"') >= len(refused_tokens) and text.count("WSDISCONNECT") >= len(sockets)
            ),
        )
    # Read after the stop: a line the server buffered would reach the file only now.
    log = server.log()
    secrets = [
        PASSWORD,
        alice.access_token,
        alice.refresh_token,
        bob.access_token,
        bob.refresh_token,
        pair["access_token"],
        pair["refresh_token"],
        bad_bearer,
        *(token for token in refused_tokens.values() if token),
    ]
    return Exercised(
        user_id=alice.id,
        secrets=secrets,
        refused={
            "missing": "Token missing",
            "malformed": "Token is invalid",
            "tampered": "Token is invalid",
            "refresh": "Token has wrong type",
            "expired": "Token is expired",
        },
        close_codes=close_codes,
        headers=headers,
        log=log,
    )


def records(exercised: Exercised) -> list[dict]:
    return [json.loads(line) for line in exercised.log.splitlines()]


def test_the_clients_saw_what_the_log_must_explain(exercised):
    assert exercised.close_codes == {
        "missing": 4001,
        "malformed": 4001,
        "tampered": 4001,
        "refresh": 4001,
        "expired": 4001,
        "good": 1000,
        "unknown room": 4004,
    }


def test_every_line_the_server_wrote_is_a_json_object_with_time_level_logger_and_event(exercised):
    lines = exercised.log.splitlines()
    assert len(lines) > 20
    for line in lines:
        record = json.loads(line)
        assert isinstance(record, dict), line
        assert {"time", "level", "logger", "event"} <= record.keys(), line
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["time"]), line


def test_no_token_password_or_token_signature_appears_in_any_line(exercised):
    assert "[REDACTED]" in exercised.log  # the tokens were there to be redacted
    for secret in exercised.secrets:
        assert secret not in exercised.log
        if secret.count(".") == 2:
            header, payload, signature = secret.split(".")
            assert signature not in exercised.log
            assert payload not in exercised.log


def test_socket_auth_failures_are_logged_with_code_4001_and_their_reason(exercised):
    refusals = [record for record in records(exercised) if record["event"] == "ws.auth_refused"]

    assert Counter((r["level"], r["logger"], r["code"], r["reason"]) for r in refusals) == Counter(
        ("WARNING", "chat.ws", 4001, reason) for reason in exercised.refused.values()
    )
    assert len({r["connection_id"] for r in refusals}) == len(refusals)


def test_each_http_request_is_one_line_with_request_id_user_id_and_no_query_string(exercised):
    requests = [record for record in records(exercised) if record["event"] == "http.request"]

    [me] = [r for r in requests if r["request_id"] == CLIENT_REQUEST_ID]
    assert exercised.headers["me"]["x-request-id"] == CLIENT_REQUEST_ID
    assert (me["method"], me["path"], me["status"], me["user_id"]) == ("GET", "/users/me", 200, exercised.user_id)
    assert sorted((r["path"], r["status"], "user_id" in r) for r in requests if r["path"] == "/messages/general") == [
        ("/messages/general", 200, True),
        ("/messages/general", 201, True),
        ("/messages/general", 401, False),
    ]
    assert all("?" not in r["path"] for r in requests)
    token_as_id = exercised.headers["token-as-request-id"]["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", token_as_id)


def test_access_lines_keep_the_query_with_the_token_redacted(exercised, request):
    if request.node.callspec.params["exercised"] != "daphne":
        pytest.skip("uvicorn writes no access log of its own: chat.http logs each request")
    access = [record for record in records(exercised) if record["logger"] == "daphne.access"]

    assert {r["path"] for r in access if r["path"].startswith("/messages/general?")} == {
        "/messages/general?token=[REDACTED]",
        "/messages/general?token=[REDACTED]&limit=5",
    }
    socket_paths = [r["path"] for r in access if r["event"].startswith("WSCONNECTING")]
    assert len(socket_paths) == len(exercised.close_codes)
    assert "/ws/general" in socket_paths and all("token" not in path for path in socket_paths)
