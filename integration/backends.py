"""The Redis and PostgreSQL the nodes run on: the machine's shared services, or private ones a test may stop.

Shared services are only ever given a fresh database (PostgreSQL) or an unused database number and a
unique key prefix (Redis), then cleaned; they are never stopped. Fault tests start private instances
on free ports (redis-server, initdb + pg_ctl in a temporary folder) and stop and restart those.
"""

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from tests.conftest import REDIS_CLAIM_KEY, free_port

SHARED_REDIS_HOST, SHARED_REDIS_PORT = "127.0.0.1", 6379
SHARED_POSTGRES_HOST, SHARED_POSTGRES_PORT, POSTGRES_USER = "127.0.0.1", 5432, "postgres"
# The unit suite (tests/conftest.py) takes Redis databases 15..8; this suite takes 7..1.
SHARED_REDIS_DBS = range(7, 0, -1)
START_TIMEOUT_SECONDS = 30.0


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


# --- PostgreSQL -----------------------------------------------------------------------------


def postgres_url(*, port: int, dbname: str, host: str = SHARED_POSTGRES_HOST) -> str:
    return f"postgres://{POSTGRES_USER}@{host}:{port}/{dbname}"


def postgres_admin(port: int, dbname: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(
        host=SHARED_POSTGRES_HOST, port=port, user=POSTGRES_USER, dbname=dbname, autocommit=True, connect_timeout=5
    )


@contextlib.contextmanager
def fresh_database(port: int) -> Iterator[str]:
    """Create a database with a name of its own on the server at `port`; drop it afterwards."""
    name = unique_name("chat_it")
    try:
        with postgres_admin(port) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL on 127.0.0.1:{port} (user {POSTGRES_USER}, trust auth) is not usable: {exc}")
    try:
        yield name
    finally:
        with contextlib.suppress(psycopg.Error), postgres_admin(port) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def applied_migrations(port: int, dbname: str) -> int:
    with postgres_admin(port, dbname) as conn:
        return conn.execute("SELECT count(*) FROM django_migrations").fetchone()[0]


def postgres_bin_dir() -> Path | None:
    """The newest PostgreSQL server installation (Debian keeps initdb and pg_ctl off PATH)."""
    candidates = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if not candidates:
        found = shutil.which("initdb")
        return Path(found).parent if found else None
    newest = max(candidates, key=lambda p: int(Path(p).parent.parent.name.split(".")[0]))
    return Path(newest).parent


class PrivatePostgres:
    """A PostgreSQL cluster of the suite's own, in a temporary folder, on a free port.

    initdb refuses to run as root, so as root every server command runs as the `postgres` OS user
    in a folder owned by it.
    """

    def __init__(self) -> None:
        bin_dir = postgres_bin_dir()
        if bin_dir is None or not (bin_dir / "pg_ctl").exists():
            pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin")
        self.bin_dir = bin_dir
        self.as_user: list[str] = []
        owner = None
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root and there is no `postgres` OS user to run initdb as")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.root = Path(tempfile.mkdtemp(prefix="chat-it-pg-"))
        if owner is not None:
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self.data_dir = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self.port = free_port()

    def _run(self, program: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*self.as_user, str(self.bin_dir / program), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
        )

    def init(self) -> None:
        done = self._run(
            "initdb", "-D", str(self.data_dir), "-U", POSTGRES_USER, "-A", "trust", "-E", "UTF8", "--no-sync"
        )
        if done.returncode != 0:
            pytest.fail(f"initdb failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
        )
        done = self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_path),
            "-o",
            options,
            "-w",
            "-t",
            str(int(START_TIMEOUT_SECONDS)),
            "start",
        )
        if done.returncode != 0:
            pytest.fail(f"pg_ctl start failed ({done.returncode}):\n{done.stdout}\n{done.stderr}\n{self.log()}")

    def stop(self) -> None:
        """A normal fast shutdown: clients are disconnected, the data stays."""
        done = self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "30", "stop")
        if done.returncode != 0:
            pytest.fail(f"pg_ctl stop failed ({done.returncode}):\n{done.stdout}\n{done.stderr}\n{self.log()}")

    def is_running(self) -> bool:
        return self._run("pg_ctl", "-D", str(self.data_dir), "status").returncode == 0

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")
        return ""

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            if self.is_running():
                self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


# --- Redis ----------------------------------------------------------------------------------


def redis_ping(port: int, db: int = 0) -> bool:
    client = redis.Redis(host=SHARED_REDIS_HOST, port=port, db=db, socket_timeout=1, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


@contextlib.contextmanager
def shared_redis_database(prefix: str) -> Iterator[str]:
    """An empty database number on the machine's Redis, claimed for this run; our keys removed afterwards."""
    client = None
    for db in SHARED_REDIS_DBS:
        client = redis.Redis(host=SHARED_REDIS_HOST, port=SHARED_REDIS_PORT, db=db, socket_timeout=2)
        try:
            claimed = client.set(REDIS_CLAIM_KEY, f"integration:{os.getpid()}", nx=True, ex=900)
        except redis.RedisError as exc:
            pytest.fail(f"Redis not reachable on {SHARED_REDIS_HOST}:{SHARED_REDIS_PORT}: {exc}")
        if claimed and client.dbsize() == 1:
            break
        if claimed:  # not empty: somebody else's data, leave it alone
            client.delete(REDIS_CLAIM_KEY)
        client.close()
    else:
        pytest.fail(f"no empty, unclaimed Redis database among {list(SHARED_REDIS_DBS)} on port {SHARED_REDIS_PORT}")
    try:
        yield f"redis://{SHARED_REDIS_HOST}:{SHARED_REDIS_PORT}/{db}"
    finally:
        with contextlib.suppress(redis.RedisError):
            for key in client.scan_iter(match=f"{prefix}*", count=500):
                client.delete(key)
            client.delete(REDIS_CLAIM_KEY)
        client.close()


class PrivateRedis:
    """A redis-server of the test's own on a free port, without persistence: a restart empties it."""

    def __init__(self, workdir: Path) -> None:
        if shutil.which("redis-server") is None:
            pytest.skip("redis-server not installed")
        self.workdir = workdir
        self.port = free_port()
        self.log_path = workdir / f"redis-{self.port}.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://{SHARED_REDIS_HOST}:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                SHARED_REDIS_HOST,
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                str(self.workdir),
                "--logfile",
                str(self.log_path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not redis_ping(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"redis-server on port {self.port} did not start:\n{self.log()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")
        return ""
