"""Several real server processes (uvicorn) on one Redis and one PostgreSQL behaving as one server.

Nodes are started with the real-server harness of tests/conftest.py (`launch_server`), given the
same secret key (a token issued by one node is accepted by every other), the same database and
Redis, and an application name of their own in PostgreSQL (`PGAPPNAME`), so that each node's
connections can be told apart in pg_stat_activity.
"""

import contextlib
import secrets
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from integration.backends import (
    SHARED_POSTGRES_PORT,
    applied_migrations,
    fresh_database,
    postgres_url,
    shared_redis_database,
    unique_name,
)
from tests.conftest import ChatUser, HttpResponse, ServerProcess, launch_server

POOL_MAX = 4  # DATABASE_POOL_MAX of the shared-service nodes: small, so that the bound shows
NODE_NAMES = "abcdefgh"


# --- every token the suite used, and every log the servers wrote -----------------------------


class Ledger:
    """Tokens handed out to the suite and the log files of every node, for the final log check."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.tokens: set[str] = set()
        self.log_paths: list[Path] = []

    def add_tokens(self, *tokens: str) -> None:
        with self._lock:
            self.tokens.update(t for t in tokens if t)

    def add_log(self, path: Path) -> None:
        with self._lock:
            if path not in self.log_paths:
                self.log_paths.append(path)


LEDGER = Ledger()


# --- nodes ----------------------------------------------------------------------------------


@dataclass
class Cluster:
    nodes: list[ServerProcess]
    database_url: str
    redis_url: str
    env: dict[str, str]

    @property
    def a(self) -> ServerProcess:
        return self.nodes[0]

    @property
    def b(self) -> ServerProcess:
        return self.nodes[1]

    def new_user(self, prefix: str, node: ServerProcess | None = None) -> ChatUser:
        """Register and log in on one node (any node would do: they share the database)."""
        user = (node or self.a).new_user(prefix)
        LEDGER.add_tokens(user.access_token, user.refresh_token)
        return user


def log_tail(node: ServerProcess, lines: int = 60) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(node.log().splitlines()[-lines:])
    return "(no log)"


def node_env(*, database_url: str, redis_url: str, prefix: str, secret_key: str, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "CHAT_REDIS_PREFIX": prefix,
        "DJANGO_SECRET_KEY": secret_key,
        "PYTHONUNBUFFERED": "1",  # the log of a node killed with -9 is complete up to its death
        # The suite registers dozens of users from one address and sends in bursts. Generous limits,
        # not disabled ones ("0"), keep the limiter's Redis round trips in play as in production.
        "AUTH_RATE": "100000/min",
        "CHAT_MESSAGE_RATE": "100000/10s",
        **extra,
    }


@contextlib.contextmanager
def running_cluster(
    workdir: Path, *, nodes: int = 2, database_url: str, redis_url: str, **extra_env: str
) -> Iterator[Cluster]:
    """Start `nodes` server processes on one database and one Redis; stop them afterwards.

    The first node migrates the (fresh) database; the others start in parallel once it is up.
    """
    env = node_env(
        database_url=database_url,
        redis_url=redis_url,
        prefix=extra_env.pop("CHAT_REDIS_PREFIX", f"chat-it-{secrets.token_hex(6)}"),
        secret_key=secrets.token_urlsafe(50),
        **extra_env,
    )

    def start(stack: contextlib.ExitStack, index: int) -> ServerProcess:
        name = NODE_NAMES[index]
        node = stack.enter_context(launch_server(workdir / f"node-{name}", **env, PGAPPNAME=f"chat-it-node-{name}"))
        LEDGER.add_log(node.log_path)
        return node

    with contextlib.ExitStack() as stack:
        started = [start(stack, 0)]
        if nodes > 1:
            with ThreadPoolExecutor(max_workers=nodes - 1) as pool:
                futures = [pool.submit(start, stack, i) for i in range(1, nodes)]
                started += [f.result() for f in futures]
        yield Cluster(nodes=started, database_url=database_url, redis_url=redis_url, env=env)


@contextlib.contextmanager
def on_shared_services(workdir: Path, *, nodes: int = 2, **extra_env: str) -> Iterator[Cluster]:
    """Nodes on a fresh database of the machine's PostgreSQL and an unused database of its Redis."""
    prefix = unique_name("chat-it")
    with (
        fresh_database(SHARED_POSTGRES_PORT) as dbname,
        shared_redis_database(prefix) as redis_url,
        running_cluster(
            workdir,
            nodes=nodes,
            database_url=postgres_url(port=SHARED_POSTGRES_PORT, dbname=dbname),
            redis_url=redis_url,
            CHAT_REDIS_PREFIX=prefix,
            **extra_env,
        ) as cluster,
    ):
        # launch_server's `migrate` ran with the node's DATABASE_URL: the tables are in PostgreSQL.
        assert applied_migrations(SHARED_POSTGRES_PORT, dbname) > 0
        yield cluster


def kill_9(node: ServerProcess) -> float:
    """SIGKILL the node (no cleanup runs); return when it died."""
    node.process.kill()
    node.process.wait(timeout=10)
    return time.monotonic()


def online_counts(node: ServerProcess) -> dict[str, int]:
    response = node.get("/rooms", timeout=10)
    assert response.status == 200, (response.status, response.body)
    return {room["name"]: room["online"] for room in response.json()["rooms"]}


def health(node: ServerProcess, timeout: float = 15) -> HttpResponse:
    return node.get("/healthz", timeout=timeout)


def wait_healthy(nodes: list[ServerProcess], *, timeout: float) -> float:
    """Wait until every node answers /healthz 200; return the seconds it took."""
    started = time.monotonic()
    deadline = started + timeout
    pending = list(nodes)
    last: dict[int, object] = {}
    while pending and time.monotonic() < deadline:
        for node in list(pending):
            try:
                response = health(node, timeout=5)
                last[node.port] = (response.status, response.body[:200])
                if response.status == 200:
                    pending.remove(node)
            except OSError as exc:
                last[node.port] = exc
        if pending:
            time.sleep(0.25)
    if pending:
        logs = "\n".join(log_tail(n) for n in pending)
        pytest.fail(f"nodes {[n.port for n in pending]} not healthy within {timeout}s (last: {last}):\n{logs}")
    return time.monotonic() - started
