"""Fixtures for suites that start the real server process (uvicorn or daphne) and talk to it over real sockets.

Nothing here touches the database in-process: the tests are HTTP and WebSocket clients, so they need
neither pytest-django's `db` fixture nor its database blocker. The server gets an environment of its
own with only the database URL and the key-file path (plus whatever a test adds), never the runner's.
"""

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
# The production server, uvicorn (chatproject/serve_uvicorn.py); CHAT_TEST_SERVER=daphne runs the suite
# on daphne (chatproject/serve.py). Both log through the JSON logging of settings.LOGGING.
SERVERS = {
    "uvicorn": [sys.executable, "-m", "chatproject.serve_uvicorn"],
    "daphne": [sys.executable, "-m", "chatproject.serve"],
}
SERVER_NAME = os.environ.get("CHAT_TEST_SERVER", "uvicorn")
PASSWORD = "correct-horse-battery-9"  # the server runs Django's real password validators
STARTUP_TIMEOUT_SECONDS = 20.0
STOP_TIMEOUT_SECONDS = 10.0
PORT_ATTEMPTS = 3
# Redis databases this suite may take, one per concurrent test run: servers sharing a database would
# share channel-layer groups (room.1, user.1, ...) and hear each other.
REDIS_TEST_DBS = range(15, 7, -1)
REDIS_CLAIM_KEY = "chat-tests:claimed-by"


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self):
        return json.loads(self.body)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


@dataclass(frozen=True)
class ChatUser:
    id: int
    username: str
    access_token: str
    refresh_token: str

    @property
    def payload(self) -> dict:
        """The {"id", "username"} object the server puts in events and messages."""
        return {"id": self.id, "username": self.username}


@dataclass
class ServerProcess:
    """A running server process serving chatproject.asgi:application, and an HTTP client for it."""

    port: int
    workdir: Path
    env: dict[str, str]
    process: subprocess.Popen
    log_path: Path
    _usernames: set[str] = field(default_factory=set)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def manage(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run manage.py against this server's database and settings, from a separate process."""
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=REPO_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    # --- HTTP ---------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body=None,
        form: Mapping[str, str] | None = None,
        raw_body: bytes | None = None,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30,
    ) -> HttpResponse:
        send_headers = dict(headers or {})
        body = raw_body
        if json_body is not None:
            body = json.dumps(json_body).encode()
            send_headers.setdefault("Content-Type", "application/json")
        elif form is not None:
            body = urlencode(form).encode()
            send_headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        if token is not None:
            send_headers["Authorization"] = f"Bearer {token}"
        # http.client rather than urllib: no proxy from the environment can get in the way.
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=send_headers)
            response = connection.getresponse()
            return HttpResponse(
                status=response.status,
                headers={name.lower(): value for name, value in response.getheaders()},
                body=response.read(),
            )
        finally:
            connection.close()

    def get(self, path: str, **kwargs) -> HttpResponse:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs) -> HttpResponse:
        return self.request("POST", path, **kwargs)

    # --- the client steps every test needs ----------------------------------------------

    def unique_username(self, prefix: str) -> str:
        while True:
            username = f"{prefix}-{uuid.uuid4().hex[:8]}"
            if username not in self._usernames:
                self._usernames.add(username)
                return username

    def register(self, username: str, password: str = PASSWORD) -> dict:
        response = self.post("/register", json_body={"username": username, "password": password})
        assert response.status == 201, (response.status, response.body)
        return response.json()

    def login(self, username: str, password: str = PASSWORD) -> dict:
        """POST /token form-encoded (the OAuth2 password grant) and return the token payload."""
        response = self.post("/token", form={"username": username, "password": password})
        assert response.status == 200, (response.status, response.body)
        return response.json()

    def new_user(self, prefix: str) -> ChatUser:
        """Register a user with a name no other test uses, and log them in."""
        username = self.unique_username(prefix)
        registered = self.register(username)
        tokens = self.login(username)
        return ChatUser(
            id=registered["id"],
            username=username,
            access_token=tokens["access_token"],
            refresh_token=tokens["refresh_token"],
        )

    def post_message(self, token: str, room: str, content: str, client_id: str | None = None) -> HttpResponse:
        body = {"content": content}
        if client_id is not None:
            body["client_id"] = client_id
        return self.post(f"/messages/{room}", json_body=body, token=token)

    def history_after(self, token: str, room: str, after: int = 0, page_size: int = 100) -> list[dict]:
        """Every message of the room with seq > after, oldest first, paging with ?after=."""
        messages: list[dict] = []
        while True:
            response = self.get(f"/messages/{room}?{urlencode({'after': after, 'limit': page_size})}", token=token)
            assert response.status == 200, (response.status, response.body)
            page = response.json()
            if not page:
                return messages
            messages.extend(page)
            after = page[-1]["seq"]

    def last_seq(self, token: str, room: str) -> int:
        response = self.get(f"/messages/{room}?limit=1", token=token)
        assert response.status == 200, (response.status, response.body)
        newest = response.json()
        return newest[0]["seq"] if newest else 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_env(workdir: Path, extra_env: Mapping[str, str]) -> dict[str, str]:
    """No environment at all but the database and key-file paths: the defaults are under test too."""
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}",  # an absolute path: sqlite:////tmp/...
        "DJANGO_SECRET_KEY_FILE": str(workdir / "secret_key"),
        # Suites register many users from one address; tests of the limits set them again.
        "AUTH_RATE": "0",
        "LOGIN_FAILURE_RATE": "0",
        "CHAT_MESSAGE_RATE": "0",
        "WS_TICKET_RATE": "0",
        "ROOM_CREATE_RATE": "0",
        **extra_env,
    }


def wait_healthy(server: ServerProcess, timeout: float = STARTUP_TIMEOUT_SECONDS) -> bool:
    """True once GET /healthz answers 200; False when the server exited first (e.g. port taken)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        with contextlib.suppress(OSError, http.client.HTTPException):
            if server.get("/healthz", timeout=2).status == 200:
                return True
        time.sleep(0.1)
    _stop(server.process)
    pytest.fail(f"server on port {server.port} not healthy within {timeout:.0f}s:\n{server.log()[-4000:]}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def launch_server(workdir: Path, *, server_name: str = SERVER_NAME, **extra_env: str) -> Iterator[ServerProcess]:
    """Migrate a SQLite database in workdir, serve it on a free port, stop it afterwards.

    `server_name` is "uvicorn" (the production server, default) or "daphne". Reusing a workdir
    restarts on the same database and key file.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    env = server_env(workdir, extra_env)
    migrate = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if migrate.returncode != 0:
        pytest.fail(f"migrate failed ({migrate.returncode}):\n{migrate.stdout}\n{migrate.stderr}")

    for attempt in range(PORT_ATTEMPTS):
        port = free_port()
        log_path = workdir / f"{server_name}-{port}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [*SERVERS[server_name], "-b", "127.0.0.1", "-p", str(port), "chatproject.asgi:application"],
                cwd=REPO_ROOT,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        server = ServerProcess(port=port, workdir=workdir, env=env, process=process, log_path=log_path)
        if wait_healthy(server):
            break
        # The port picked may have been taken between probing and binding: try another one.
        if "Address already in use" not in server.log() or attempt == PORT_ATTEMPTS - 1:
            pytest.fail(f"server exited with {process.returncode} before answering /healthz:\n{server.log()}")
    try:
        yield server
    finally:
        _stop(server.process)


@pytest.fixture(scope="module")
def server_extra_env() -> dict[str, str]:
    """Environment added to the module's server; override in a module to run it differently."""
    return {}


@pytest.fixture(scope="module")
def server(tmp_path_factory, server_extra_env) -> Iterator[ServerProcess]:
    """One server per test module, shared by its tests; they use unique usernames."""
    with launch_server(tmp_path_factory.mktemp("server"), **server_extra_env) as running:
        yield running


@pytest.fixture(name="launch_server")
def launch_server_fixture():
    """The launcher itself, for tests that need a server of their own (extra env, restarts)."""
    return launch_server


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis database of this test's own (skip when Redis is not running), emptied before and after."""
    redis = pytest.importorskip("redis")
    for db in REDIS_TEST_DBS:
        client = redis.Redis(host="127.0.0.1", port=6379, db=db, socket_timeout=2)
        try:
            claimed = client.set(REDIS_CLAIM_KEY, os.getpid(), nx=True, ex=600)
        except redis.RedisError as exc:
            pytest.skip(f"Redis not reachable on 127.0.0.1:6379: {exc}")
        if claimed:
            break
    else:
        pytest.skip(f"every Redis test database ({list(REDIS_TEST_DBS)}) is claimed by another run")
    try:
        for key in client.scan_iter():
            if key != REDIS_CLAIM_KEY.encode():
                client.delete(key)
        yield f"redis://127.0.0.1:6379/{db}"
    finally:
        client.flushdb()
        client.close()


# --- the browser ------------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"  # Debian's package; Playwright's own browser download does not work here
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium driven by Playwright, one per module."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
