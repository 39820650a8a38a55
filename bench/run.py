"""The chat server's benchmark, against a bare `websockets` relay (bench/reference.py) in the same run.

    .venv/bin/python bench/run.py            # the full run (tens of minutes with the scale-out configuration)
    .venv/bin/python bench/run.py --smoke    # every scenario tiny, tens of seconds, no timing asserted (CI)
    .venv/bin/python bench/run.py --only history,idle_rss      # a subset; docs/performance.md left alone
    .venv/bin/python bench/run.py --server uvicorn              # the same scenarios served by uvicorn

Starts the chat server (`python -m chatproject.serve`, or uvicorn with --server uvicorn; SQLite and the
in-process channel layer in a temporary directory, rate limits off, LOG_LEVEL=WARNING) and the reference
relay, each on a free port. Users, their access tokens and one fresh room per scenario are made in bulk
with `manage.py shell -c` (a /token login hashes the password: 1,000 of them would take minutes; logins
are timed separately). WebSocket clients (`websockets`, permessage-deflate off) run in child processes.

When PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) answer, every scenario runs a second time
against a chat server on both (bench/backends.py: a database created for the run and dropped after it,
a Redis prefix of its own): the scale-out configuration. --config picks one of the two.

Scenarios (--only takes their names), each on both servers unless said otherwise:
- fanout: closed loop (acceptance): one client process, 100 clients in one room, each sends its next
  message when its own previous one comes back, 20 messages each: deliveries/s;
- connects: connect (token auth for the chat), wait for the first event (the chat's presence; the
  relay sends none, so its handshake), close; errors counted;
- latency: rooms of 10, 100 and 1,000, open loop at a fixed rate: send→receive p50/p99;
- persisted: many senders in several rooms (50 in 10; `--persisted-rooms N`: 5 in each of N), closed
  loop, 200 messages each (a run of a few seconds: 40 each, half a second, varied by a quarter between
  runs), then the history of every room is read back over GET /messages and must hold exactly what was
  sent;
- logins: sequential POST /token (chat only);
- login_load: 20 concurrent POST /token logins while a 20-member room chats in open loop: login p50 and
  the chat's p99 during the logins and, in the same run, without them (chat only);
- idle_rss: the server process's resident memory before and after 1,000 and then 5,000 idle sockets
  (10 to a room, spread over client processes): KiB per socket;
- history: 1,000,000 messages bulk-inserted into one room, then GET /messages p50/p99 for the newest
  page, a page before a seq deep in the history, and a page after a seq, sequential and concurrent
  (chat only).

Every receiver checks the message events it got (the chat by seq, the relay by client_id): a lost or
duplicated delivery anywhere fails the run (exit 1). Results go to bench/results/<timestamp>.json and,
for a full run of every scenario, docs/performance.md (plus docs/performance.png when matplotlib is
importable).
"""

import argparse
import asyncio
import contextlib
import http.client
import importlib.metadata
import importlib.util
import json
import multiprocessing
import os
import queue
import random
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

from backends import DEFAULT_REDIS_URL, missing, scale_out_services
from report import machine, normalize_event, table, write_chart, write_doc

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"
DOC_PATH = REPO_ROOT / "docs" / "performance.md"
CHART_PATH = REPO_ROOT / "docs" / "performance.png"
PYTHON = sys.executable
PASSWORD = "correct-horse-battery-9"
STARTUP_TIMEOUT = 30.0
SMOKE = False  # set by --smoke
DEFLATE = False  # set by --deflate
SERVER_EXTRA_ENV: dict[str, str] = {}  # set by --server-env
DEFAULT_PERSISTED_ROOMS = 10
PERSISTED_ROOMS = DEFAULT_PERSISTED_ROOMS  # set by --persisted-rooms: rooms of 5 closed-loop senders each
RECEIVE_TIMEOUT = 120.0  # a scenario's receivers give up this long after the last send
QUIET_SECONDS = 0.3  # a room client is ready once no frame has arrived for this long

SCENARIOS = ("fanout", "connects", "latency", "persisted", "logins", "login_load", "idle_rss", "history")
CONFIGS = {
    "embedded": "SQLite + in-process layer",
    "scale-out": "PostgreSQL + Redis",
}

SHELL_SETUP = """
import json, os
from django.contrib.auth.hashers import make_password
from accounts.models import User
from accounts.tokens import token_pair_issue
from chat.models import Room
spec = json.loads(os.environ["BENCH_SETUP"])
password = make_password(spec["password"])  # hashed once, shared: the benchmark's users are throwaway
users = User.objects.bulk_create(
    [User(username=f"{spec['prefix']}{n}", password=password) for n in range(spec["users"])]
)
users = list(User.objects.filter(username__startswith=spec["prefix"]).order_by("id"))
for room in spec["rooms"]:
    Room.objects.create(name=room, title=room)
print(json.dumps([[u.id, u.username, token_pair_issue(user=u).access_token] for u in users]))
"""

# One INSERT ... SELECT over a generated series: a million rows in seconds, where the ORM would take
# minutes. seq runs 1..n, gapless like the server's own, and the room's last_seq says so.
SHELL_SEED_HISTORY = """
import json, os
from django.db import connection, transaction
from chat.models import Message, Room
spec = json.loads(os.environ["BENCH_SEED"])
room = Room.objects.get(name=spec["room"])
column = {f.name: connection.ops.quote_name(f.column) for f in Message._meta.concrete_fields}
columns = ", ".join(column[name] for name in ("room", "user", "content", "created", "client_id", "seq"))
table = connection.ops.quote_name(Message._meta.db_table)
if connection.vendor == "postgresql":
    series = "generate_series(1, %(n)s) AS s(seq)"
    created = "now() - (%(n)s - seq) * interval '1 millisecond'"
else:
    series = "(WITH RECURSIVE s(seq) AS (SELECT 1 UNION ALL SELECT seq + 1 FROM s WHERE seq < %(n)s) SELECT seq FROM s)"
    created = "strftime('%%Y-%%m-%%d %%H:%%M:%%f', 'now', ((seq - %(n)s) / 1000.0) || ' seconds')"
with transaction.atomic():
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({columns}) SELECT %(room)s, %(user)s, 'history ' || seq || ' ' || %(filler)s, "
            f"{created}, NULL, seq FROM {series}",
            {"n": spec["messages"], "room": room.pk, "user": spec["user"], "filler": "x" * 64},
        )
    Room.objects.filter(pk=room.pk).update(last_seq=spec["messages"])
with connection.cursor() as cursor:
    cursor.execute("ANALYZE")
print(json.dumps({"count": Message.objects.filter(room=room).count()}))
"""


# --- servers --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http_request(port: int, method: str, path: str, body: dict | None = None, token: str | None = None):
    headers = {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


class Server:
    def __init__(self, name: str, command: list[str], env: dict, port: int, log_path: Path):
        self.name, self.port, self.log_path = name, port, log_path
        with log_path.open("ab") as log:  # a restarted server appends: the run's log stays whole
            self.process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def wait_ready(self, probe) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.name} exited ({self.process.returncode}):\n{self.log_path.read_text()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if probe():
                    return
            time.sleep(0.1)
        self.stop()
        raise SystemExit(f"{self.name} not ready within {STARTUP_TIMEOUT}s:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    """The process's resident set size (VmRSS), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_idle(server: "Server", limit: float = 90.0) -> float:
    """Wait until the server process uses < 10% of a core over 0.5 s (backlogs of the last step drained)."""
    started = time.monotonic()
    if SMOKE:  # tiny scenarios leave no backlog worth waiting for
        return 0.0
    with contextlib.suppress(OSError):
        while time.monotonic() - started < limit:
            before = cpu_seconds(server.process.pid)
            time.sleep(0.5)
            if cpu_seconds(server.process.pid) - before < 0.05:
                break
    return round(time.monotonic() - started, 1)


def chat_env(workdir: Path, scale_out_env: dict | None) -> dict:
    """The chat server's environment: SQLite in the workdir, or the scale-out run's PostgreSQL and Redis."""
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}",
        "DJANGO_SECRET_KEY_FILE": str(workdir / "secret_key"),
        "AUTH_RATE": "0",
        "LOGIN_FAILURE_RATE": "0",
        "CHAT_MESSAGE_RATE": "0",
        "CHAT_MAX_CONNECTIONS_PER_USER": "0",
        "LOG_LEVEL": "WARNING",
        **(scale_out_env or {}),
        **SERVER_EXTRA_ENV,
    }


def server_command(server: str, port: int) -> list[str]:
    """One server process either way: no workers, no reload, no access log (daphne's is below LOG_LEVEL)."""
    if server == "uvicorn":  # what `make run` and `make run-prod` serve with
        deflate = ["--ws-per-message-deflate"] if DEFLATE else []
        return [PYTHON, "-m", "chatproject.serve_uvicorn", "-b", "127.0.0.1", "-p", str(port), *deflate]
    return [PYTHON, "-m", "chatproject.serve", "-b", "127.0.0.1", "-p", str(port), "chatproject.asgi:application"]


def start_chat(workdir: Path, scale_out_env: dict | None, server: str, migrate=True) -> Server:
    env = chat_env(workdir, scale_out_env)
    if migrate:
        done = subprocess.run(
            [PYTHON, "manage.py", "migrate", "--noinput"], cwd=REPO_ROOT, env=env, capture_output=True, text=True
        )
        if done.returncode:
            raise SystemExit(f"migrate failed:\n{done.stdout}\n{done.stderr}")
    port = free_port()
    chat = Server("chat server", server_command(server, port), env, port, workdir / "chat.log")
    chat.env = env
    chat.wait_ready(lambda: http_request(port, "GET", "/healthz")[0] == 200)
    return chat


def start_reference(workdir: Path) -> Server:
    port = free_port()
    command = [PYTHON, str(REPO_ROOT / "bench" / "reference.py"), "--port", str(port)]
    env = {"PATH": os.environ.get("PATH", os.defpath)}
    server = Server("reference relay", command, env, port, workdir / "reference.log")

    def probe() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True

    server.wait_ready(probe)
    return server


def setup_chat(server: Server, prefix: str, users: int, rooms: list[str]) -> list[tuple[int, str, str]]:
    """Bulk-create users (with access tokens) and rooms in the chat's database."""
    env = {
        **server.env,
        "BENCH_SETUP": json.dumps({"prefix": prefix, "users": users, "rooms": rooms, "password": PASSWORD}),
    }
    done = subprocess.run(
        [PYTHON, "manage.py", "shell", "-c", SHELL_SETUP], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(f"user setup failed:\n{done.stdout}\n{done.stderr}")
    return [tuple(row) for row in json.loads(done.stdout.strip().splitlines()[-1])]


# --- the client processes --------------------------------------------------------------------------


def raise_fd_limit() -> None:
    """Soft limit up to the hard one, and the hard one up to 65,536 where we may (root): 5,000 idle sockets."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for wanted in (max(hard, 65536), hard):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return


async def open_socket(url: str, wait_first_event: bool):
    from websockets.asyncio.client import connect

    # --deflate: the clients ask for permessage-deflate (inherited through the environment by the client
    # processes); the relay never accepts it.
    compression = "deflate" if os.environ.get("BENCH_DEFLATE") else None
    websocket = await connect(url, compression=compression, ping_interval=None, open_timeout=60, max_queue=None)
    if wait_first_event:
        first = json.loads(await asyncio.wait_for(websocket.recv(), 60))
        if first.get("type") != "presence":
            raise RuntimeError(f"first event is not presence: {first}")
    return websocket


class Receiver:
    """Reads one socket: message events by key (seq for the chat, client_id for the relay), latencies."""

    def __init__(self, websocket, chat: bool, expected: int, own_prefix: str):
        self.websocket, self.chat, self.expected, self.own_prefix = websocket, chat, expected, own_prefix
        self.seen: set = set()
        self.duplicates = 0
        self.latencies: list[float] = []
        self.sent_at: list[float] = []  # beside latencies: when each message was sent
        self.last_receive = 0.0
        self.last_frame = time.monotonic()  # any frame: joins of the members that connected later
        self.own_ack = asyncio.Event()
        self.complete = asyncio.Event()
        if expected == 0:
            self.complete.set()

    async def run(self) -> None:
        with contextlib.suppress(Exception):
            async for frame in self.websocket:
                now = self.last_frame = time.monotonic()
                event = json.loads(frame)
                if event.get("type") != "message":
                    continue
                key = event["seq"] if self.chat else event["client_id"]
                if key in self.seen:
                    self.duplicates += 1
                    continue
                self.seen.add(key)
                self.last_receive = now
                sent = float(event["content"].split(" ", 1)[0])
                self.latencies.append(now - sent)
                self.sent_at.append(sent)
                if (event.get("client_id") or "").startswith(self.own_prefix):
                    self.own_ack.set()
                if len(self.seen) >= self.expected:
                    self.complete.set()

    def lost(self) -> int:
        if self.chat:
            return sum(1 for seq in range(1, self.expected + 1) if seq not in self.seen)
        return max(0, self.expected - len(self.seen))


async def room_client(spec: dict, control) -> dict:
    """Connect spec["urls"], wait for the parent's start time, send as spec says, receive, report."""
    chat = spec["chat"]
    semaphore = asyncio.Semaphore(spec.get("connect_concurrency", 50))

    async def connect_one(url):
        async with semaphore:
            return await open_socket(url, chat)

    sockets = await asyncio.gather(*(connect_one(url) for url in spec["urls"]))
    prefix = f"p{spec['process']}c"
    receivers = [Receiver(ws, chat, spec["expected"], f"{prefix}{i}-") for i, ws in enumerate(sockets)]
    tasks = [asyncio.create_task(r.run()) for r in receivers]
    # Ready once the sockets are read up: each socket of a chat room has a join event queued for every
    # member that connected after it (half a million in a room of 1,000), which would otherwise be
    # parsed during the measurement, on the clock of its first messages.
    quiet_deadline = time.monotonic() + RECEIVE_TIMEOUT
    while time.monotonic() - max((r.last_frame for r in receivers), default=0.0) < QUIET_SECONDS:
        if time.monotonic() > quiet_deadline:
            raise RuntimeError(f"frames still arriving {RECEIVE_TIMEOUT:.0f} s after the sockets connected")
        await asyncio.sleep(QUIET_SECONDS / 4)
    loop = asyncio.get_running_loop()
    control["ready"].put(spec["process"])
    start_at = await loop.run_in_executor(None, control["start"].get)
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    first_send = time.monotonic()
    sent = 0

    def frame(client: int, n: int) -> str:
        content = f"{time.monotonic():.6f} {'x' * 64}"
        return json.dumps({"type": "message", "content": content, "client_id": f"{prefix}{client}-{n}"})

    if spec["mode"] == "closed":

        async def sender(i: int) -> None:
            nonlocal sent
            receiver = receivers[i]
            for n in range(spec["messages"]):
                receiver.own_ack.clear()
                await sockets[i].send(frame(i, n))
                sent += 1
                await asyncio.wait_for(receiver.own_ack.wait(), RECEIVE_TIMEOUT)

        senders = spec.get("senders", len(sockets))
        await asyncio.gather(*(sender(i) for i in range(senders)))
    else:  # open loop: message k of the run is sent at start + k / rate by process k % processes
        rate, total, processes = spec["rate"], spec["total"], spec["processes"]
        for k in range(spec["process"], total, processes):
            delay = first_send + k / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            client = (k // processes) % len(sockets)
            await sockets[client].send(frame(client, k))
            sent += 1
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(r.complete.wait() for r in receivers)), RECEIVE_TIMEOUT)
    for ws in sockets:
        await ws.close()
    for task in tasks:
        task.cancel()
    latencies = [x for r in receivers for x in r.latencies]
    return {
        "sent_at": [x for r in receivers for x in r.sent_at],
        "sent": sent,
        "received": sum(len(r.seen) for r in receivers),
        "lost": sum(r.lost() for r in receivers),
        "duplicates": sum(r.duplicates for r in receivers),
        "first_send": first_send,
        "last_receive": max((r.last_receive for r in receivers), default=first_send),
        "latencies": latencies,
    }


async def storm_client(spec: dict, control) -> dict:
    """Connect and disconnect spec["count"] sockets, spec["concurrency"] at a time."""
    control["ready"].put(spec["process"])
    loop = asyncio.get_running_loop()
    start_at = await loop.run_in_executor(None, control["start"].get)
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    semaphore = asyncio.Semaphore(spec["concurrency"])
    errors: list[str] = []
    durations: list[float] = []

    async def one(url: str) -> None:
        async with semaphore:
            started = time.monotonic()
            try:
                websocket = await open_socket(url, spec["chat"])
                durations.append(time.monotonic() - started)
                await websocket.close()
            except Exception as exc:  # every failure is a counted error, whatever it is
                errors.append(repr(exc)[:200])

    first = time.monotonic()
    await asyncio.gather(*(one(url) for url in spec["urls"]))
    return {
        "connects": len(durations),
        "errors": errors,
        "first_send": first,
        "last_receive": time.monotonic(),
        "latencies": durations,
    }


async def idle_client(spec: dict, control) -> dict:
    """Open the sockets of each of spec["stages"] in turn and hold them; close them all after the last."""
    from websockets.protocol import State

    semaphore = asyncio.Semaphore(spec["concurrency"])
    sockets, errors = [], []

    async def connect_one(url: str) -> None:
        async with semaphore:
            try:
                sockets.append(await open_socket(url, spec["chat"]))
            except Exception as exc:  # every failure is a counted error, whatever it is
                errors.append(repr(exc)[:200])

    loop = asyncio.get_running_loop()
    first = time.monotonic()
    for urls in spec["stages"]:
        await asyncio.gather(*(connect_one(url) for url in urls))
        control["ready"].put(spec["process"])
        await loop.run_in_executor(None, control["start"].get)
    closed_early = sum(1 for websocket in sockets if websocket.state is not State.OPEN)

    async def close(websocket) -> None:
        async with semaphore:
            await websocket.close()

    await asyncio.gather(*(close(websocket) for websocket in sockets))
    return {
        "connects": len(sockets),
        "closed_early": closed_early,
        "errors": errors,
        "first_send": first,
        "last_receive": time.monotonic(),
        "latencies": [],
    }


CLIENTS = {"room": room_client, "storm": storm_client, "idle": idle_client}


def client_process(kind: str, spec: dict, control, results) -> None:
    raise_fd_limit()
    try:
        results.put(("ok", asyncio.run(CLIENTS[kind](spec, control))))
    except BaseException as exc:  # reported to the parent, which fails the run
        results.put(("error", repr(exc)))


def run_processes(
    kind: str, specs: list[dict], server: "Server", timeout: float = 900, stages: int = 1, on_ready=None
) -> list[dict]:
    """Run one client process per spec, start them together, collect their results.

    A process reports ready once per stage (idle clients: once per batch of sockets opened); when all
    have, the server is left to go idle, on_ready(stage, start_at) runs, and they are told to go on.
    """
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    controls, processes = [], []
    for n, spec in enumerate(specs):
        spec["process"] = n
        control = {"ready": context.Queue(), "start": context.Queue()}
        process = context.Process(target=client_process, args=(kind, spec, control, results), daemon=True)
        process.start()
        controls.append(control)
        processes.append(process)
    deadline = time.monotonic() + timeout
    try:
        for stage in range(stages):
            for control in controls:
                while True:
                    try:
                        control["ready"].get(timeout=1)
                        break
                    except queue.Empty:
                        if time.monotonic() > deadline or not all(p.is_alive() for p in processes):
                            raise SystemExit(f"client processes failed to connect: {_drain(results)}") from None
            wait_idle(server, limit=300)  # e.g. the join events of a room that just connected
            start_at = time.monotonic() + 0.5  # CLOCK_MONOTONIC is system-wide on Linux
            if on_ready:
                on_ready(stage, start_at)
            for control in controls:
                control["start"].put(start_at)
        collected = []
        for _ in specs:
            status, value = results.get(timeout=max(1.0, deadline - time.monotonic()))
            if status != "ok":
                raise SystemExit(f"client process failed: {value}")
            collected.append(value)
        return collected
    finally:
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()


def _drain(results) -> list:
    items = []
    with contextlib.suppress(queue.Empty):
        while True:
            items.append(results.get(timeout=0.5))
    return items


# --- scenarios -----------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def merge(parts: list[dict]) -> dict:
    elapsed = max(p["last_receive"] for p in parts) - min(p["first_send"] for p in parts)
    latencies = [x for p in parts for x in p["latencies"]]
    merged = {"elapsed_s": round(elapsed, 4), "samples": len(latencies)}
    for key in ("sent", "received", "lost", "duplicates", "connects", "closed_early"):
        if key in parts[0]:
            merged[key] = sum(p[key] for p in parts)
    if "errors" in parts[0]:
        errors = [e for p in parts for e in p["errors"]]
        merged["errors"] = len(errors)
        merged["error_examples"] = errors[:5]
    if latencies:
        merged["p50_ms"] = round(percentile(latencies, 50) * 1000, 2)
        merged["p99_ms"] = round(percentile(latencies, 99) * 1000, 2)
    return merged


def room_urls(server: Server, room: str, tokens: list[str] | None, count: int) -> list[str]:
    if tokens is None:
        return [f"{server.ws}/ws/{room}" for _ in range(count)]
    return [f"{server.ws}/ws/{room}?{urlencode({'token': tokens[i % len(tokens)]})}" for i in range(count)]


def split(items: list, parts: int) -> list[list]:
    return [items[i::parts] for i in range(parts)]


class Bench:
    def __init__(self, smoke: bool, workdir: Path, scale_out_env: dict | None, server: str):
        self.smoke = smoke
        self.workdir = workdir
        self.chat_options = (scale_out_env, server)
        self.chat = start_chat(workdir, *self.chat_options)
        try:
            self.reference = start_reference(workdir)
        except SystemExit:
            self.chat.stop()
            raise
        self.rooms_made = 0
        self.tokens: list[str] = []
        self.results: dict = {}
        self.failures: list[str] = []

    def stop(self) -> None:
        self.chat.stop()
        self.reference.stop()

    def restart(self) -> None:
        """New server processes on the same database: free of what earlier scenarios left in their memory."""
        self.stop()
        self.chat = start_chat(self.workdir, *self.chat_options, migrate=False)
        self.reference = start_reference(self.workdir)

    def prepare(self, users: int, rooms: int) -> None:
        names = [f"bench{n}" for n in range(rooms)]
        rows = setup_chat(self.chat, "benchuser", users, names)
        self.tokens = [row[2] for row in rows]
        self.user_rows = rows
        self.free_rooms = names

    def fresh_room(self) -> str:
        return self.free_rooms.pop(0)

    def both(self, run) -> tuple[dict, dict]:
        results = []
        for server, chat in ((self.chat, True), (self.reference, False)):
            wait_idle(server)
            try:
                results.append(run(server, chat))
            except (Exception, SystemExit) as exc:  # one failed scenario must not lose the others' figures
                self.failures.append(f"{server.name}: {exc}")
                results.append({"error": str(exc)[:500]})
            wait_idle(server)  # leave events of the sockets just closed
        chat, reference = results
        for name, result in (("chat", chat), ("reference", reference)):
            if result.get("lost") or result.get("duplicates"):
                self.failures.append(f"{name}: {result.get('lost')} lost, {result.get('duplicates')} duplicated")
        return chat, reference

    def chat_only(self, run) -> dict:
        """A scenario the relay has no counterpart for (logins, history): the chat server alone."""
        wait_idle(self.chat)
        try:
            result = run()
        except (Exception, SystemExit) as exc:  # one failed scenario must not lose the others' figures
            self.failures.append(f"{self.chat.name}: {exc}")
            result = {"error": str(exc)[:500]}
        wait_idle(self.chat)
        if result.get("lost") or result.get("duplicates"):
            self.failures.append(f"chat: {result.get('lost')} lost, {result.get('duplicates')} duplicated")
        return result

    def record(self, key: str, chat: dict, reference: dict, **extra) -> None:
        self.results[key] = {"chat": chat, "reference": reference, **extra}
        print(f"{key}: chat {summary(chat)} | reference {summary(reference)}", flush=True)

    # Acceptance: one client process, closed loop, 100 clients x 20 messages in one room.
    def fanout_closed_loop(self) -> None:
        clients, messages = (10, 3) if self.smoke else (100, 20)

        def run(server: Server, chat: bool) -> dict:
            room = self.fresh_room() if chat else "accept"
            urls = room_urls(server, room, self.tokens if chat else None, clients)
            spec = {"chat": chat, "urls": urls, "mode": "closed", "messages": messages, "expected": clients * messages}
            result = merge(run_processes("room", [spec], server))
            result["deliveries_per_s"] = round(result["received"] / result["elapsed_s"], 1)
            result["messages_per_s"] = round(result["sent"] / result["elapsed_s"], 1)
            return result

        chat, reference = self.both(run)
        self.record("fanout_closed_loop_100", chat, reference, clients=clients, messages=messages)

    def connects(self) -> None:
        count, concurrency, processes = (20, 5, 2) if self.smoke else (1000, 50, 2)

        def run(server: Server, chat: bool) -> dict:
            room = self.fresh_room() if chat else "storm"
            urls = room_urls(server, room, self.tokens if chat else None, count)
            specs = [{"chat": chat, "urls": part, "concurrency": concurrency} for part in split(urls, processes)]
            result = merge(run_processes("storm", specs, server))
            result["connects_per_s"] = round(result["connects"] / result["elapsed_s"], 1)
            return result

        chat, reference = self.both(run)
        if chat.get("errors"):
            self.failures.append(f"connect storm: {chat['errors']} errors ({chat['error_examples']})")
        self.record("connect_storm", chat, reference, count=count, concurrency=concurrency)

    def fanout_latency(self, members: int, rate: float, duration: float) -> None:
        processes = 1 if members <= 100 else 2
        total = max(1, int(rate * duration))

        def run(server: Server, chat: bool) -> dict:
            room = self.fresh_room() if chat else f"latency{members}"
            urls = room_urls(server, room, self.tokens if chat else None, members)
            specs = [
                {
                    "chat": chat,
                    "urls": part,
                    "mode": "open",
                    "rate": rate,
                    "total": total,
                    "processes": processes,
                    "expected": total,
                }
                for part in split(urls, processes)
            ]
            result = merge(run_processes("room", specs, server))
            result["deliveries_per_s"] = round(result["received"] / result["elapsed_s"], 1)
            return result

        chat, reference = self.both(run)
        self.record(f"fanout_latency_{members}", chat, reference, members=members, rate=rate, messages=total)

    def persisted(self) -> None:
        rooms, per_room, messages = (2, 3, 3) if self.smoke else (PERSISTED_ROOMS, 5, 200)

        def run(server: Server, chat: bool) -> dict:
            names = [self.fresh_room() if chat else f"persist{n}" for n in range(rooms)]
            specs = [
                {"chat": chat, "urls": [], "mode": "closed", "messages": messages, "expected": per_room * messages}
                for _ in range(2)
            ]
            for n, room in enumerate(names):  # the rooms spread over two client processes
                tokens = self.tokens[n * per_room : (n + 1) * per_room] if chat else None
                specs[n % 2]["urls"] += room_urls(server, room, tokens, per_room)
            result = merge(run_processes("room", specs, server))
            result["persisted_per_s"] = round(result["sent"] / result["elapsed_s"], 1)
            if chat:
                stored = {room: self.history_count(room) for room in names}
                result["history_count"] = sum(stored.values())
                result["history_equals_sent"] = result["history_count"] == result["sent"] and all(
                    count == per_room * messages for count in stored.values()
                )
                if not result["history_equals_sent"]:
                    self.failures.append(f"history holds {stored}, sent {per_room * messages} to each room")
            return result

        chat, reference = self.both(run)
        self.record("persisted", chat, reference, rooms=rooms, senders=rooms * per_room, messages_each=messages)

    def history_count(self, room: str) -> int:
        """Every message of the room, paged with ?after=; their seqs must run 1..n without a gap."""
        token, after, seqs = self.tokens[0], 0, []
        while True:
            status, body = http_request(self.chat.port, "GET", f"/messages/{room}?after={after}&limit=100", token=token)
            if status != 200:
                raise SystemExit(f"GET /messages/{room}: {status} {body[:200]!r}")
            page = json.loads(body)
            if not page:
                break
            seqs.extend(m["seq"] for m in page)
            after = page[-1]["seq"]
        if seqs != list(range(1, len(seqs) + 1)):
            self.failures.append(f"history of {room} is not seq 1..{len(seqs)}")
        return len(seqs)

    def logins(self) -> None:
        """Sequential POST /token on users made by bulk setup (one full password hash each)."""
        count = 1 if self.smoke else 10
        durations = []
        for _, username, _ in self.user_rows[:count]:
            started = time.monotonic()
            status, body = http_request(self.chat.port, "POST", "/token", {"username": username, "password": PASSWORD})
            durations.append(time.monotonic() - started)
            if status != 200:
                raise SystemExit(f"POST /token: {status} {body[:200]!r}")
        self.results["login"] = {"chat": {"samples": count, "p50_ms": round(statistics.median(durations) * 1000, 1)}}
        print(f"login: p50 {self.results['login']['chat']['p50_ms']} ms", flush=True)

    def login_load(self) -> None:
        """Concurrent logins (a full password hash each) while a room chats in open loop at a modest rate."""
        members, rate, quiet, duration, logins = (5, 20.0, 0.5, 2.0, 3) if self.smoke else (20, 10.0, 5.0, 30.0, 20)
        total = int(rate * duration)

        def run() -> dict:
            urls = room_urls(self.chat, self.fresh_room(), self.tokens, members)
            spec = {"chat": True, "urls": urls, "mode": "open", "rate": rate, "total": total, "processes": 1}
            spec["expected"] = total
            attempts: list[dict] = []
            threads: list[threading.Thread] = []

            def login(username: str, at: float) -> None:
                time.sleep(max(0.0, at - time.monotonic()))
                started = time.monotonic()
                try:
                    status = http_request(
                        self.chat.port, "POST", "/token", {"username": username, "password": PASSWORD}
                    )[0]
                except (OSError, http.client.HTTPException) as exc:
                    status = repr(exc)[:200]
                attempts.append({"started": started, "ended": time.monotonic(), "status": status})

            def start_logins(stage: int, start_at: float) -> None:
                for _, username, _ in self.user_rows[:logins]:
                    threads.append(threading.Thread(target=login, args=(username, start_at + quiet), daemon=True))
                    threads[-1].start()

            try:
                part = run_processes("room", [spec], self.chat, on_ready=start_logins)[0]
            finally:
                for thread in threads:
                    thread.join(timeout=120)
            failed = [a["status"] for a in attempts if a["status"] != 200]
            if failed or len(attempts) != logins:
                raise SystemExit(f"{len(attempts)} of {logins} logins answered, failures: {failed[:5]}")
            logins_from = min(a["started"] for a in attempts)
            logins_until = max(a["ended"] for a in attempts)
            samples = list(zip(part["sent_at"], part["latencies"], strict=True))
            result = merge([part])
            result.update(
                logins=logins,
                login_p50_ms=round(percentile([a["ended"] - a["started"] for a in attempts], 50) * 1000, 1),
                login_max_ms=round(max(a["ended"] - a["started"] for a in attempts) * 1000, 1),
                logins_s=round(logins_until - logins_from, 2),
                # the last message is sent at first_send + duration: logins after it overlap no chat
                logins_outlasted_chat=logins_until > part["first_send"] + duration,
                chat_without_logins=latency_summary([x for sent, x in samples if sent < logins_from]),
                chat_during_logins=latency_summary([x for sent, x in samples if logins_from <= sent <= logins_until]),
            )
            return result

        result = self.chat_only(run)
        self.results["login_load"] = {"chat": result, "members": members, "rate": rate, "logins": logins}
        if "error" in result:
            print(f"login_load: {result['error']}", flush=True)
        else:
            without, during = result["chat_without_logins"], result["chat_during_logins"]
            print(
                f"login_load: login p50 {result['login_p50_ms']} ms, chat p99 {without.get('p99_ms')} ms without "
                f"logins, {during.get('p99_ms')} ms during them",
                flush=True,
            )

    def idle_rss(self) -> None:
        """The server's resident memory per idle socket, 10 sockets to a room, distinct users in each room."""
        stages, per_room, processes = ((20, 30), 10, 2) if self.smoke else ((1000, 4000), 10, 4)
        warmup = 50
        names = [f"idle{n}" for n in range(sum(stages) // per_room)]
        setup_chat(self.chat, "benchidle", 0, names)
        # Memory that earlier scenarios allocated and freed would be reused by the sockets and hide their cost.
        self.restart()

        def run(server: Server, chat: bool) -> dict:
            urls = []
            for n, room in enumerate(names):
                tokens = [self.tokens[(n * per_room + k) % len(self.tokens)] for k in range(per_room)]
                urls += room_urls(server, room, tokens if chat else None, per_room)

            def specs(batches: list[list[str]]) -> list[dict]:
                parts = [split(batch, processes) for batch in batches]
                return [
                    {"chat": chat, "concurrency": 10, "stages": [batch[i] for batch in parts]} for i in range(processes)
                ]

            # The first sockets pay once for code paths and caches the others share: not per-socket memory.
            run_processes("idle", specs([urls[:warmup]]), server)
            wait_idle(server)
            pid = server.process.pid
            base, started = rss_kib(pid), time.monotonic()
            measured = []

            def measure(stage: int, start_at: float) -> None:
                measured.append(
                    {"rss_kib": rss_kib(pid), "fds": open_fds(pid), "open_s": round(time.monotonic() - started, 1)}
                )

            batches, offset = [], 0
            for size in stages:
                batches.append(urls[offset : offset + size])
                offset += size
            result = merge(run_processes("idle", specs(batches), server, stages=len(stages), on_ready=measure))
            sockets = [sum(stages[: n + 1]) for n in range(len(stages))]
            return {
                "sockets": sockets,
                "connects": result["connects"],
                "errors": result["errors"],
                "error_examples": result["error_examples"],
                "closed_early": result["closed_early"],
                "rss_base_kib": base,
                "stages": measured,
                "kib_per_socket": [round((m["rss_kib"] - base) / n, 1) for m, n in zip(measured, sockets, strict=True)],
            }

        chat, reference = self.both(run)
        for name, result in (("chat", chat), ("reference", reference)):
            if result.get("errors") or result.get("closed_early"):
                self.failures.append(
                    f"idle sockets, {name}: {result['errors']} failed to open ({result['error_examples']}), "
                    f"{result['closed_early']} closed while idle"
                )
        self.record("idle_rss", chat, reference, per_room=per_room)

    def history(self) -> None:
        """GET /messages in a room of a million bulk-inserted messages: newest page, deep pages, concurrent."""
        messages, samples, clients = (2000, 20, 2) if self.smoke else (1_000_000, 500, 4)
        small = 1000

        def run() -> dict:
            room, small_room = self.fresh_room(), self.fresh_room()
            started = time.monotonic()
            seed_history(self.chat, room, messages, self.user_rows[0][0])
            seed_s = round(time.monotonic() - started, 1)
            seed_history(self.chat, small_room, small, self.user_rows[0][0])
            rng = random.Random(0)

            def newest(room: str = room, last: int = messages) -> tuple[str, int]:
                return f"/messages/{room}", last

            def before() -> tuple[str, int]:  # deep: somewhere in the middle half of the history
                seq = rng.randint(messages // 4, 3 * messages // 4)
                return f"/messages/{room}?before={seq}", seq - 1

            def after() -> tuple[str, int]:
                seq = rng.randint(0, messages - 100)
                return f"/messages/{room}?after={seq}", seq + 1

            token = self.tokens[0]
            timed_gets(self.chat.port, token, [newest() for _ in range(20)])  # warm-up: connections, caches
            requests = {
                name: latency_summary(timed_gets(self.chat.port, token, [make() for _ in range(samples)]))
                for name, make in (("newest", newest), ("before", before), ("after", after))
            }
            requests["newest_small_room"] = latency_summary(
                timed_gets(self.chat.port, token, [newest(small_room, small) for _ in range(samples)])
            )
            mixed = [[(newest, before, after)[n % 3]() for n in range(samples)] for _ in range(clients)]
            started = time.monotonic()
            with ThreadPoolExecutor(clients) as pool:
                durations = list(pool.map(lambda part: timed_gets(self.chat.port, token, part), mixed))
            elapsed = time.monotonic() - started
            requests["concurrent"] = latency_summary([x for part in durations for x in part])
            requests["concurrent"]["requests_per_s"] = round(clients * samples / elapsed, 1)
            return {"messages": messages, "seed_s": seed_s, "small_room_messages": small, "requests": requests}

        result = self.chat_only(run)
        self.results["history"] = {"chat": result, "messages": messages, "samples": samples, "clients": clients}
        if "error" in result:
            print(f"history: {result['error']}", flush=True)
        else:
            pages = ", ".join(f"{k} {v.get('p50_ms')}/{v.get('p99_ms')}" for k, v in result["requests"].items())
            print(f"history: {messages:,} messages seeded in {result['seed_s']} s; p50/p99 ms: {pages}", flush=True)


def latency_summary(durations: list[float]) -> dict:
    """Sample count, p50 and p99 in ms."""
    summary = {"samples": len(durations)}
    if durations:
        summary["p50_ms"] = round(percentile(durations, 50) * 1000, 2)
        summary["p99_ms"] = round(percentile(durations, 99) * 1000, 2)
    return summary


def seed_history(server: Server, room: str, messages: int, user_id: int) -> None:
    """Bulk-insert messages 1..n into the room (SHELL_SEED_HISTORY), its last_seq set to n."""
    env = {**server.env, "BENCH_SEED": json.dumps({"room": room, "messages": messages, "user": user_id})}
    done = subprocess.run(
        [PYTHON, "manage.py", "shell", "-c", SHELL_SEED_HISTORY],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise SystemExit(f"history seeding failed:\n{done.stdout}\n{done.stderr}")
    count = json.loads(done.stdout.strip().splitlines()[-1])["count"]
    if count != messages:
        raise SystemExit(f"history seeding: {count} messages in {room}, not {messages}")


def timed_gets(port: int, token: str, requests: list[tuple[str, int]]) -> list[float]:
    """GET each path on one keep-alive connection; each answer's first message must have the expected seq."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    durations = []
    try:
        for path, first_seq in requests:
            started = time.perf_counter()
            connection.request("GET", path, headers={"Authorization": f"Bearer {token}"})
            response = connection.getresponse()
            body = response.read()
            durations.append(time.perf_counter() - started)
            if response.status != 200:
                raise SystemExit(f"GET {path}: {response.status} {body[:200]!r}")
            page = json.loads(body)
            if len(page) != 50 or page[0]["seq"] != first_seq:
                first = page[0]["seq"] if page else None
                raise SystemExit(f"GET {path}: {len(page)} messages from seq {first}, not {first_seq}")
    finally:
        connection.close()
    return durations


def log_summary(path: Path) -> dict:
    """ERROR lines the chat server logged during the run (each is a server-side failure to look at)."""
    errors: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            event = None
            if line.startswith(("ERROR:", "CRITICAL:")):  # uvicorn's own loggers write plain text
                event = line.split(":", 1)[1].strip()
            with contextlib.suppress(ValueError, AttributeError):
                record = json.loads(line)
                if record.get("level") in ("ERROR", "CRITICAL"):
                    event = record.get("event", "?")
            if event is not None:
                errors[normalize_event(event)] = errors.get(normalize_event(event), 0) + 1
    return {"error_lines": sum(errors.values()), "by_event": errors}


def summary(result: dict) -> str:
    keys = ("deliveries_per_s", "connects_per_s", "persisted_per_s", "kib_per_socket", "p50_ms", "p99_ms")
    keys += ("lost", "duplicates", "errors", "closed_early")
    return ", ".join(f"{k}={result[k]}" for k in keys if k in result)


def run_scenarios(bench: Bench, only: set[str], with_1000: bool) -> None:
    smoke = bench.smoke
    half = 10.0  # messages/s for the latency rooms when the acceptance scenario does not run
    if "fanout" in only:
        bench.fanout_closed_loop()
        acceptance = bench.results["fanout_closed_loop_100"]["chat"]
        half = acceptance.get("messages_per_s", 20.0) / 2  # half the acceptance load, in messages/s
    if "connects" in only:
        bench.connects()
    if "latency" in only:
        if smoke:
            bench.fanout_latency(10, rate=20, duration=0.5)
        else:
            bench.fanout_latency(10, rate=half, duration=10)
            bench.fanout_latency(100, rate=half, duration=10)
            if with_1000:
                bench.fanout_latency(1000, rate=max(1.0, half * 100 / 1000), duration=10)
    if "persisted" in only:
        bench.persisted()
    if "logins" in only:
        bench.logins()
    if "login_load" in only:
        bench.login_load()
    if "idle_rss" in only:  # before history: the million-message room's pages would sit in the server's memory
        bench.idle_rss()
    if "history" in only:
        bench.history()


def run_config(config: str, services: dict | None, arguments, only: set[str]) -> dict:
    """Every chosen scenario against one configuration of the chat server (and a relay of its own)."""
    run = {
        "config": config,
        "label": CONFIGS[config],
        "server": arguments.server,
        "server_version": importlib.metadata.version(arguments.server),
        "versions": (services or {}).get("versions", {}),
        "deflate": DEFLATE,
        "server_env": dict(SERVER_EXTRA_ENV),
        "results": {},
        "failures": [],
    }
    options = "".join([", deflate" if DEFLATE else "", *(f", {k}={v}" for k, v in SERVER_EXTRA_ENV.items())])
    print(f"== {run['label']} ({arguments.server}{options})", flush=True)
    with tempfile.TemporaryDirectory(prefix="chat-bench-") as tmp:
        try:
            bench = Bench(arguments.smoke, Path(tmp), (services or {}).get("env"), arguments.server)
        except SystemExit as exc:  # the other configuration's figures still count
            run["failures"].append(f"chat server did not start: {str(exc)[:2000]}")
            return run
        try:
            bench.prepare(users=1000 if not arguments.smoke else 20, rooms=40 + PERSISTED_ROOMS)
            run_scenarios(bench, only, not arguments.without_1000)
        finally:
            bench.stop()
            bench.results["server_log"] = log_summary(bench.chat.log_path)
    run["results"], run["failures"] = bench.results, bench.failures
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description="Chat server benchmark against a bare websockets relay.")
    parser.add_argument("--smoke", action="store_true", help="every scenario tiny, a few seconds, no timing asserted")
    parser.add_argument(
        "--only",
        metavar="SCENARIO[,SCENARIO]",
        help=f"run these scenarios only ({', '.join(SCENARIOS)}); docs/performance.md is left as it was",
    )
    parser.add_argument(
        "--config",
        choices=("all", *CONFIGS),
        default="all",
        help="all (default): embedded, then scale-out when PostgreSQL and Redis answer; or just one of them",
    )
    parser.add_argument(
        "--server",
        choices=("uvicorn", "daphne"),
        default="uvicorn",
        help="uvicorn (chatproject.serve_uvicorn, the default, as `make run`) or daphne (chatproject.serve)",
    )
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help="Redis of the scale-out configuration")
    parser.add_argument(
        "--without-1000",
        action="store_true",
        help="leave out the 1,000-member latency room (about a minute per configuration)",
    )
    parser.add_argument(
        "--deflate",
        action="store_true",
        help="negotiate permessage-deflate: the chat server (uvicorn) offers it and the clients ask for it",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="add to the chat server's environment (e.g. DATABASE_POOL_MAX=20); may be repeated",
    )
    parser.add_argument(
        "--persisted-rooms",
        type=int,
        default=DEFAULT_PERSISTED_ROOMS,
        metavar="N",
        help=f"rooms of 5 senders each in the persisted scenario (default {DEFAULT_PERSISTED_ROOMS}: 50 senders; "
        "at most 200; --smoke keeps its own 2 rooms)",
    )
    parser.add_argument("--report", metavar="JSON", help="only regenerate docs/performance.md from a results file")
    arguments = parser.parse_args()
    if arguments.report:
        report = json.loads(Path(arguments.report).read_text())
        rows = table(report)
        write_doc(report, rows, write_chart(rows, CHART_PATH), DOC_PATH)
        print(f"regenerated {DOC_PATH.relative_to(REPO_ROOT)} from {arguments.report}")
        return 0
    only = set(arguments.only.split(",")) if arguments.only else set(SCENARIOS)
    if only - set(SCENARIOS):
        parser.error(f"unknown scenario {', '.join(sorted(only - set(SCENARIOS)))}; known: {', '.join(SCENARIOS)}")
    if arguments.server == "uvicorn" and importlib.util.find_spec("uvicorn") is None:
        parser.error("--server uvicorn: uvicorn is not installed (pip install 'uvicorn[standard]')")
    smoke = arguments.smoke
    global SMOKE, DEFLATE, PERSISTED_ROOMS
    SMOKE = smoke
    DEFLATE = arguments.deflate
    if not 1 <= arguments.persisted_rooms <= 200:  # 5 senders a room, from the run's 1,000 users
        parser.error("--persisted-rooms takes 1 to 200")
    PERSISTED_ROOMS = arguments.persisted_rooms
    if DEFLATE:
        os.environ["BENCH_DEFLATE"] = "1"
    for pair in arguments.server_env:
        name, equals, value = pair.partition("=")
        if not equals:
            parser.error(f"--server-env takes NAME=VALUE, not {pair!r}")
        SERVER_EXTRA_ENV[name] = value
    raise_fd_limit()
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    not_implemented = []
    if arguments.without_1000 and not smoke and "latency" in only:
        not_implemented.append("Fan-out latency at 1,000 members (left out with --without-1000).")
    configs = ["embedded", "scale-out"] if arguments.config == "all" else [arguments.config]
    absent = missing(arguments.redis_url) if "scale-out" in configs else []
    if absent and arguments.config == "scale-out":
        parser.error(f"the scale-out configuration needs {' and '.join(absent)}")
    if absent:
        configs.remove("scale-out")
        not_implemented.append(f"The scale-out configuration (PostgreSQL + Redis): not reachable: {'; '.join(absent)}.")
        print(f"scale-out configuration skipped: {'; '.join(absent)} not reachable", flush=True)
    runs = []
    for config in configs:
        if config == "embedded":
            runs.append(run_config(config, None, arguments, only))
            continue
        with scale_out_services(arguments.redis_url, f"chat_bench_{os.getpid()}") as services:
            runs.append(run_config(config, services, arguments, only))
    partial = only != set(SCENARIOS)
    suffix = "-smoke" if smoke else f"-{'-'.join(s for s in SCENARIOS if s in only)}" if partial else ""
    report = {
        "started": started.isoformat(timespec="seconds"),
        "smoke": smoke,
        "only": sorted(only) if partial else None,
        "file": f"{stamp}{suffix}.json",
        "machine": machine(),
        "runs": runs,
        "failures": [f"{run['label']}: {failure}" for run in runs for failure in run["failures"]],
        "not_implemented": not_implemented,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / report["file"]).write_text(json.dumps(report, indent=2) + "\n")
    rows = table(report)
    if smoke or partial:  # the report code runs too, so that it cannot rot, but the full run's document stays
        with tempfile.TemporaryDirectory(prefix="chat-bench-doc-") as tmp:
            write_doc(report, rows, write_chart(rows, Path(tmp) / "performance.png"), Path(tmp) / "performance.md")
        print(f"results: bench/results/{report['file']} (docs/performance.md left as it was)")
    else:
        write_doc(report, rows, write_chart(rows, CHART_PATH), DOC_PATH)
        print(f"results: bench/results/{report['file']}; {DOC_PATH.relative_to(REPO_ROOT)}")
    if report["failures"]:
        print("FAILED:\n  " + "\n  ".join(report["failures"]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
