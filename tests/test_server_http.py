"""The README's HTTP walk-through, the docs and the defaults, against the real server process."""

import json
import re
import socket
import stat
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import pytest

from tests.conftest import PASSWORD

pytestmark = pytest.mark.server

# This module's server starts with nothing in its environment but these (see conftest.server_env).
# The harness sets only paths, and switches the rate limits off; nothing about DEBUG.
MINIMAL_ENV = {
    "PATH",
    "DATABASE_URL",
    "DJANGO_SECRET_KEY_FILE",
    "AUTH_RATE",
    "LOGIN_FAILURE_RATE",
    "CHAT_MESSAGE_RATE",
    "WS_TICKET_RATE",
    "ROOM_CREATE_RATE",
}


def assert_utc_timestamp(value: str) -> None:
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() == timedelta(0), value


def test_readme_walk_through(server):
    # The only test of this module that writes to "general", so its seqs start at 1.
    username = server.unique_username("alice")

    registered = server.post("/register", json_body={"username": username, "password": "correct-horse-9"})
    assert registered.status == 201
    assert registered.json() == {"id": registered.json()["id"], "username": username}
    user_id = registered.json()["id"]
    assert isinstance(user_id, int)

    token = server.post("/token", form={"username": username, "password": "correct-horse-9"})
    assert token.status == 200
    assert token.content_type == "application/json"
    tokens = token.json()
    assert tokens == {
        "access_token": tokens["access_token"],
        "refresh_token": tokens["refresh_token"],
        "token_type": "bearer",
        "expires_in": 1800,
    }
    access = tokens["access_token"]
    assert isinstance(access, str) and access.count(".") == 2

    me = server.get("/users/me", token=access)
    assert me.status == 200
    assert me.json() == {"id": user_id, "username": username, "date_joined": me.json()["date_joined"]}
    assert_utc_timestamp(me.json()["date_joined"])

    rooms = server.get("/rooms")
    assert rooms.status == 200
    assert rooms.json() == {
        "rooms": [
            {"name": "general", "title": "General", "online": 0, "archived": False},
            {"name": "python", "title": "Python", "online": 0, "archived": False},
            {"name": "frontend", "title": "Frontend", "online": 0, "archived": False},
            {"name": "random", "title": "Random", "online": 0, "archived": False},
        ]
    }

    posted = server.post_message(access, "general", "hello", client_id="c-1")
    assert posted.status == 201
    message = posted.json()
    assert message == {
        "id": message["id"],
        "seq": 1,
        "room": "general",
        "user": {"id": user_id, "username": username},
        "content": "hello",
        "timestamp": message["timestamp"],
        "client_id": "c-1",
    }
    assert isinstance(message["id"], int)
    assert_utc_timestamp(message["timestamp"])

    history = server.get("/messages/general?limit=20", token=access)
    assert history.status == 200
    assert history.json() == [message]


def test_token_accepts_the_grant_type_and_json(server):
    username = server.unique_username("grant")
    server.register(username)

    with_grant = server.post(
        "/token", form={"grant_type": "password", "username": username, "password": "wrong-horse-battery-9"}
    )
    assert with_grant.status == 401
    assert with_grant.json() == {"detail": "Incorrect username or password"}
    assert with_grant.headers["www-authenticate"] == "Bearer"

    form = server.post(
        "/token", form={"grant_type": "password", "username": username, "password": "correct-horse-battery-9"}
    )
    as_json = server.post("/token", json_body={"username": username, "password": "correct-horse-battery-9"})
    for response in (form, as_json):
        assert response.status == 200
        assert set(response.json()) == {"access_token", "refresh_token", "token_type", "expires_in"}
        assert server.get("/users/me", token=response.json()["access_token"]).status == 200


def test_a_body_sent_in_chunks_is_read_like_one_with_a_length(server):
    # http.client sends an iterable body with Transfer-Encoding: chunked and no Content-Length.
    user = server.new_user("chunks")
    body = [b'{"content": "sent ', b'in chunks", ', b'"client_id": "chunked-1"}']
    posted = server.post(
        "/messages/random", raw_body=iter(body), token=user.access_token, headers={"Content-Type": "application/json"}
    )
    assert posted.status == 201, posted.body
    assert (posted.json()["content"], posted.json()["client_id"]) == ("sent in chunks", "chunked-1")

    login = server.post(
        "/token",
        raw_body=iter([f"username={user.username}&".encode(), b"password=", PASSWORD.encode()]),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert login.status == 200, login.body

    too_big = server.post(
        "/messages/random",
        raw_body=iter([b'{"content": "', *[b"x" * (1024 * 1024)] * 3, b'"}']),
        token=user.access_token,
        headers={"Content-Type": "application/json"},
    )
    # Django's size limit (RequestDataTooBig), not the message's length: the body is never parsed.
    assert (too_big.status, too_big.json()) == (400, {"detail": "Bad request."})
    assert server.last_seq(user.access_token, "random") == posted.json()["seq"]


def test_a_client_that_goes_away_mid_request_is_no_server_error(server):
    """A bot that times out and drops its connection (RST) right after its request: Django's handler
    closed the body when it saw the disconnect, while the view, on its request thread, had still to
    read it, and a few in ten such requests were logged as a 500 with a traceback."""
    user = server.new_user("gone")
    body = json.dumps({"content": "sent, then gone"}).encode()
    head = (
        f"POST /messages/random HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {user.access_token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    log_before = len(server.log())

    for n in range(40):
        with socket.create_connection(("127.0.0.1", server.port)) as connection:
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close: RST
            connection.sendall(head + body)
            if n % 2:  # half of them say they are done sending first, and wait a little
                connection.shutdown(socket.SHUT_WR)
                time.sleep(0.05)
    time.sleep(1.0)  # the last views finish

    lines = [json.loads(line) for line in server.log()[log_before:].splitlines() if line.startswith("{")]
    assert [line for line in lines if line["level"] == "ERROR" or line.get("status", 0) >= 500] == []
    stored = server.history_after(user.access_token, "random")
    assert 0 < sum(m["user"]["id"] == user.id for m in stored) <= 40  # what was stored is kept


def test_protected_endpoints_answer_401_with_bearer_challenge(server):
    for path in ("/users/me", "/messages/general"):
        response = server.get(path)
        assert response.status == 401, path
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.content_type == "application/json"
        assert set(response.json()) == {"detail"}


def test_a_refresh_token_is_used_once_however_many_requests_race_with_it(server):
    barrier = threading.Barrier(8)

    def refresh(token: str):
        barrier.wait()
        return server.post("/token/refresh", json_body={"refresh_token": token})

    def logout(access: str, token: str):
        barrier.wait()
        return server.post("/logout", json_body={"refresh_token": token}, token=access)

    for _ in range(5):
        user = server.new_user("racer")
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(refresh, [user.refresh_token] * 8))
        assert sorted(answer.status for answer in answers) == [200] + [401] * 7
        # The same between a logout and refreshes: one of them has the token, the others are refused
        # (a logout that lost answers 400, as for any revoked token).
        fresh = next(answer.json() for answer in answers if answer.status == 200)
        with ThreadPoolExecutor(8) as pool:
            calls = [pool.submit(logout, fresh["access_token"], fresh["refresh_token"])]
            calls += [pool.submit(refresh, fresh["refresh_token"]) for _ in range(7)]
            statuses = [call.result().status for call in calls]
        assert sorted(statuses) in ([200, 400] + [401] * 6, [204] + [401] * 7), statuses


def test_healthz(server):
    response = server.get("/healthz")
    assert response.status == 200
    assert response.json() == {"status": "ok", "database": "ok", "channel_layer": "ok"}


def test_openapi_schema_covers_the_api(server):
    response = server.get("/api/schema/?format=json")
    assert response.status == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    # The schema may spell a path with the trailing slash the server also answers to.
    operations = {(path.rstrip("/"), method) for path, item in schema["paths"].items() for method in item}
    assert {
        ("/register", "post"),
        ("/token", "post"),
        ("/token/refresh", "post"),
        ("/logout", "post"),
        ("/users/me", "get"),
        ("/rooms", "get"),
        ("/messages/{room}", "get"),
        ("/messages/{room}", "post"),
        ("/healthz", "get"),
    } <= operations
    yaml_schema = server.get("/api/schema/")
    assert yaml_schema.status == 200
    assert yaml_schema.body.startswith(b"openapi: 3.")


def test_openapi_schema_declares_bearer_auth(server):
    """The Bearer endpoints say so in the schema, so that Swagger UI can send a token."""
    schema = server.get("/api/schema/?format=json").json()
    schemes = schema.get("components", {}).get("securitySchemes", {})
    bearer = [
        name for name, scheme in schemes.items() if scheme.get("type") == "http" and scheme.get("scheme") == "bearer"
    ]
    assert bearer, f"no bearer security scheme in {schemes}"
    paths = {path.rstrip("/"): item for path, item in schema["paths"].items()}
    for path, method in (("/users/me", "get"), ("/messages/{room}", "get"), ("/messages/{room}", "post")):
        security = paths[path][method].get("security", schema.get("security", []))
        assert any(bearer[0] in requirement for requirement in security), (path, method, security)


def test_swagger_ui_is_served_locally(server):
    page = server.get("/api/docs/")
    assert page.status == 200
    assert page.content_type.startswith("text/html")
    html = page.body.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any(asset.endswith(".js") for asset in assets)
    assert any(asset.endswith(".css") for asset in assets)
    # Swagger UI's start-up script comes from the view itself (?script=), not inline: see the CSP.
    assert "/api/docs/?script=" in assets
    for asset in assets:
        assert asset.startswith(("/static/", "/api/docs/")), f"not served locally: {asset}"
        response = server.get(asset)
        assert response.status == 200, asset
        assert response.body, asset
    assert 'url: "/api/schema/"' in server.get("/api/docs/?script=").body.decode()


def test_no_environment_means_debug_off(server):
    assert set(server.env) == MINIMAL_ENV
    response = server.get("/no/such/page")
    assert response.status == 404
    assert response.content_type == "application/json"
    assert response.json() == {"detail": "Not found."}


def test_dev_secret_key_is_generated_into_the_key_file(server):
    key_file = server.workdir / "secret_key"
    assert key_file.exists()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(key_file.read_text().strip()) >= 50


def test_tokens_survive_a_restart(launch_server, tmp_path):
    with launch_server(tmp_path) as first:
        user = first.new_user("restart")
    with launch_server(tmp_path) as second:
        me = second.get("/users/me", token=user.access_token)
        assert me.status == 200
        assert me.json()["username"] == user.username
        refreshed = second.post("/token/refresh", json_body={"refresh_token": user.refresh_token})
        assert refreshed.status == 200
        assert json.loads(refreshed.body)["token_type"] == "bearer"


def test_history_answers_are_the_same_with_the_fast_path_and_without(launch_server, tmp_path):
    """On real processes sharing one database: GET /messages through chat.fast_history (the default)
    and through Django alone (HISTORY_FAST_PATH off) give the same status, headers and body; the fast
    server's debug log shows which requests it passed on to Django."""
    with (
        launch_server(tmp_path, LOG_LEVEL="DEBUG") as fast,
        launch_server(tmp_path, HISTORY_FAST_PATH="false") as plain,
    ):
        user = fast.new_user("fastpath")
        assert fast.post("/rooms", json_body={"name": "fastpath"}, token=user.access_token).status == 201
        for content in ("hello", "emoji \U0001f600 and \u2028 separator", 'quote " backslash \\'):
            assert fast.post_message(user.access_token, "fastpath", content).status == 201
        tokens = {"valid": user.access_token, "none": None, "bad": "not-a-token"}
        queries = ["", "?limit=2", "?before=3", "?after=1", "?skip=1&limit=1", "?limit=0", "?limit=x"]

        for room in ("fastpath", "nowhere"):
            for query in queries:
                for name, token in tokens.items():
                    path = f"/messages/{room}{query}"
                    passed_on_before = fast.log().count("history fast path: passed on")
                    answers = [server.get(path, token=token) for server in (fast, plain)]
                    passed_on = fast.log().count("history fast path: passed on") > passed_on_before

                    fast_answer, django_answer = answers
                    assert (fast_answer.status, fast_answer.body) == (django_answer.status, django_answer.body), (
                        path,
                        name,
                    )
                    ignored = {"x-request-id", "date"}
                    assert [(k, v) for k, v in fast_answer.headers.items() if k not in ignored] == [
                        (k, v) for k, v in django_answer.headers.items() if k not in ignored
                    ], (path, name)
                    plain_request = room == "fastpath" and name == "valid" and query not in ("?limit=0", "?limit=x")
                    assert passed_on is not plain_request, (path, name)
