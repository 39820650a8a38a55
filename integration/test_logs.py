"""No token ever appears in any log line: every log every node of the session wrote, access logs included.

Runs last (see conftest.py). It first puts tokens where loggers look — query strings of HTTP and
WebSocket requests, refused and tampered tokens, Authorization headers of failed requests — on nodes
of its own, stops them so their logs are complete, then greps every node log of the session for
every token the suite was given, and for each token's signature segment alone.
"""

import asyncio
import base64
import json
import re
from pathlib import Path
from urllib.parse import urlencode

from integration.clients import connect_outcome, in_thread, open_socket, sockets_closed_at_exit
from integration.cluster import LEDGER, on_shared_services
from tests.conftest import ChatUser

JWT_LIKE = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
PROBE_PATH = "/no-such-page-log-check"  # must show up in the access log, its ?token= must not


def tampered(token: str) -> str:
    """The same token claiming another user: a refused token is a secret all the same."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["user_id"] = str(int(claims["user_id"]) + 1000)
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


async def put_tokens_where_loggers_look(cluster) -> None:
    a, b = cluster.nodes
    user = cluster.new_user("logged")
    forged = tampered(user.access_token)
    LEDGER.add_tokens(forged)
    async with sockets_closed_at_exit() as opened:
        for node in (a, b):
            socket = await open_socket(node, "general", user, since=0)
            opened.append(socket)
            await socket.send_message("a message that is logged about", client_id=f"log-{node.port}")
            await socket.wait_for_client_id(f"log-{node.port}")
        with_refresh = ChatUser(user.id, user.username, user.refresh_token, user.refresh_token)
        with_forged = ChatUser(user.id, user.username, forged, forged)
        assert await connect_outcome(a, "general", with_refresh, timeout=10) == ("closed", 4001)
        assert await connect_outcome(b, "general", with_forged, timeout=10) == ("closed", 4001)
        assert await connect_outcome(a, "no-such-room", user, timeout=10) == ("closed", 4004)

    def http_traffic() -> None:
        token = user.access_token
        assert a.get(f"/messages/general?{urlencode({'token': token, 'limit': 5})}", token=token).status == 200
        assert b.get(f"{PROBE_PATH}?{urlencode({'token': token})}").status == 404
        assert a.get(f"/healthz?{urlencode({'access_token': token})}").status == 200
        assert b.get("/users/me", token=user.refresh_token).status == 401
        assert a.get("/users/me", token=forged).status == 401
        refreshed = b.post("/token/refresh", json_body={"refresh_token": user.refresh_token})
        assert refreshed.status == 200, refreshed.body
        tokens = refreshed.json()
        LEDGER.add_tokens(tokens["access_token"], tokens["refresh_token"])
        assert b.post("/token/refresh", json_body={"refresh_token": user.refresh_token}).status == 401  # revoked
        logout = a.post("/logout", json_body={"refresh_token": tokens["refresh_token"]}, token=tokens["access_token"])
        assert logout.status == 204, logout.body

    await in_thread(http_traffic)


def leaks_in(path: Path, tokens: set[str]) -> list[str]:
    found = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        for token in tokens:
            signature = token.rsplit(".", 1)[-1]
            if token in line or (len(signature) >= 16 and signature in line):
                found.append(f"{path}:{number}: token ...{signature[-8:]}: {line[:300]}")
        if JWT_LIKE.search(line):
            found.append(f"{path}:{number}: something shaped like a JWT: {line[:300]}")
    return found


def test_no_token_used_by_the_suite_appears_in_any_server_log(tmp_path_factory):
    with on_shared_services(tmp_path_factory.mktemp("logs")) as cluster:
        asyncio.run(put_tokens_where_loggers_look(cluster))
    # The nodes are stopped: every line they were going to write is written.

    logs = [p for p in LEDGER.log_paths if p.exists()]
    assert logs and LEDGER.tokens
    assert any(PROBE_PATH in p.read_text(errors="replace") for p in logs), (
        "the request to the probe path is in no log: the access log is not captured, so this check would be vacuous"
    )
    leaks = [leak for path in logs for leak in leaks_in(path, LEDGER.tokens)]
    assert not leaks, f"{len(leaks)} log lines carry a token ({len(LEDGER.tokens)} tokens, {len(logs)} logs):\n" + (
        "\n".join(leaks[:40])
    )
