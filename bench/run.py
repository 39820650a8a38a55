"""The chat server's benchmark, against a bare `websockets` relay (bench/reference.py) in the same run.

    .venv/bin/python bench/run.py            # the full run (a few minutes)
    .venv/bin/python bench/run.py --smoke    # every scenario tiny, a few seconds, no timing asserted (CI)

Starts the chat server (`python -m chatproject.serve`, SQLite and the in-process channel layer in a
temporary directory, rate limits off, LOG_LEVEL=WARNING) and the reference relay, each on a free port.
Users, their access tokens and one fresh room per scenario are made in bulk with `manage.py shell -c`
(a /token login hashes the password: 1,000 of them would take minutes; a few /token logins are timed
separately). WebSocket clients (`websockets`, permessage-deflate off) run in child processes.

Scenarios, each on both servers:
- fan-out closed loop (acceptance): one client process, 100 clients in one room, each sends its next
  message when its own previous one comes back, 20 messages each: deliveries/s;
- connects/s: connect (token auth for the chat), wait for the first event (the chat's presence; the
  relay sends none, so its handshake), close; errors counted;
- fan-out latency: rooms of 10, 100 and 1,000, open loop at a fixed rate: send→receive p50/p99;
- persisted messages/s: many senders in several rooms, closed loop, then the history of every room is
  read back over GET /messages and must hold exactly what was sent.

Every receiver checks the message events it got (the chat by seq, the relay by client_id): a lost or
duplicated delivery anywhere fails the run (exit 1). Results go to bench/results/<timestamp>.json and
docs/performance.md (plus docs/performance.png when matplotlib is importable).
"""

import argparse
import asyncio
import contextlib
import http.client
import json
import multiprocessing
import os
import platform
import queue
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"
DOC_PATH = REPO_ROOT / "docs" / "performance.md"
CHART_PATH = REPO_ROOT / "docs" / "performance.png"
PYTHON = sys.executable
PASSWORD = "correct-horse-battery-9"
STARTUP_TIMEOUT = 30.0
SMOKE = False  # set by --smoke
RECEIVE_TIMEOUT = 120.0  # a scenario's receivers give up this long after the last send

NOTES_MARKER = "<!-- Written by hand below this line: bench/run.py keeps it when it regenerates the rest. -->"
NOT_IMPLEMENTED = [
    "Redis + PostgreSQL configuration (the scale-out run): only the embedded default (SQLite, in-process layer).",
    "GET /messages p50/p99 with 1,000,000 messages in the room (bulk-seeded).",
    "RSS per idle connection at 1,000 and 5,000 connections.",
    "Login p50 and the chat's p99 while 20 logins run (only a sequential /token p50 is measured).",
]

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
        with log_path.open("wb") as log:
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


def chat_env(workdir: Path) -> dict:
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}",
        "DJANGO_SECRET_KEY_FILE": str(workdir / "secret_key"),
        "AUTH_RATE": "0",
        "LOGIN_FAILURE_RATE": "0",
        "CHAT_MESSAGE_RATE": "0",
        "CHAT_MAX_CONNECTIONS_PER_USER": "0",
        "LOG_LEVEL": "WARNING",
    }


def start_chat(workdir: Path) -> Server:
    env = chat_env(workdir)
    migrate = subprocess.run(
        [PYTHON, "manage.py", "migrate", "--noinput"], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    if migrate.returncode:
        raise SystemExit(f"migrate failed:\n{migrate.stdout}\n{migrate.stderr}")
    port = free_port()
    command = [PYTHON, "-m", "chatproject.serve", "-b", "127.0.0.1", "-p", str(port), "chatproject.asgi:application"]
    server = Server("chat server", command, env, port, workdir / "chat.log")
    server.env = env
    server.wait_ready(lambda: http_request(port, "GET", "/healthz")[0] == 200)
    return server


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
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def open_socket(url: str, wait_first_event: bool):
    from websockets.asyncio.client import connect

    websocket = await connect(url, compression=None, ping_interval=None, open_timeout=60, max_queue=None)
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
        self.last_receive = 0.0
        self.own_ack = asyncio.Event()
        self.complete = asyncio.Event()
        if expected == 0:
            self.complete.set()

    async def run(self) -> None:
        with contextlib.suppress(Exception):
            async for frame in self.websocket:
                now = time.monotonic()
                event = json.loads(frame)
                if event.get("type") != "message":
                    continue
                key = event["seq"] if self.chat else event["client_id"]
                if key in self.seen:
                    self.duplicates += 1
                    continue
                self.seen.add(key)
                self.last_receive = now
                content = event["content"]
                self.latencies.append(now - float(content.split(" ", 1)[0]))
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


def client_process(kind: str, spec: dict, control, results) -> None:
    raise_fd_limit()
    try:
        coroutine = room_client if kind == "room" else storm_client
        results.put(("ok", asyncio.run(coroutine(spec, control))))
    except BaseException as exc:  # reported to the parent, which fails the run
        results.put(("error", repr(exc)))


def run_processes(kind: str, specs: list[dict], server: "Server", timeout: float = 900) -> list[dict]:
    """Run one client process per spec, start them together, collect their results."""
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
    for key in ("sent", "received", "lost", "duplicates", "connects"):
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
    def __init__(self, smoke: bool, workdir: Path):
        self.smoke = smoke
        self.workdir = workdir
        self.chat = start_chat(workdir)
        self.reference = start_reference(workdir)
        self.rooms_made = 0
        self.tokens: list[str] = []
        self.results: dict = {}
        self.failures: list[str] = []

    def stop(self) -> None:
        self.chat.stop()
        self.reference.stop()

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
        rooms, per_room, messages = (2, 3, 3) if self.smoke else (10, 5, 40)

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


def log_summary(path: Path) -> dict:
    """ERROR lines the chat server logged during the run (each is a server-side failure to look at)."""
    errors: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if record.get("level") in ("ERROR", "CRITICAL"):
                    event = normalize_event(record.get("event", "?"))
                    errors[event] = errors.get(event, 0) + 1
    return {"error_lines": sum(errors.values()), "by_event": errors}


def normalize_event(event: str) -> str:
    """One key per kind of error: the first line, numbers (task names, ids) replaced by N."""
    return re.sub(r"\d+", "N", event.splitlines()[0] if event else "?")[:160]


def group_events(by_event: dict[str, int]) -> dict[str, int]:
    grouped: dict[str, int] = {}
    for event, count in by_event.items():
        grouped[normalize_event(event)] = grouped.get(normalize_event(event), 0) + count
    return dict(sorted(grouped.items(), key=lambda item: -item[1]))


def summary(result: dict) -> str:
    keys = ("deliveries_per_s", "connects_per_s", "persisted_per_s", "p50_ms", "p99_ms", "lost", "duplicates", "errors")
    return ", ".join(f"{k}={result[k]}" for k in keys if k in result)


# --- report ----------------------------------------------------------------------------------------------


def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "?")
    memory = ""
    with contextlib.suppress(OSError):
        total_kb = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{total_kb / 1024 / 1024:.1f} GiB"
    return {
        "cpu": model,
        "nproc": os.cpu_count(),
        "memory": memory,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def rows(results: dict) -> list[dict]:
    """One table row per figure: value, reference value, ratio, target, met."""
    table = []

    def add(scenario, figure, chat, reference, unit, target_text, met, higher_is_better=True):
        ratio = None
        if chat is not None and reference:
            ratio = chat / reference if higher_is_better else reference / chat if chat else None
        table.append(
            {
                "scenario": scenario,
                "figure": figure,
                "chat": chat,
                "reference": reference,
                "unit": unit,
                "ratio": ratio,
                "target": target_text,
                "met": met,
            }
        )

    def failed(r) -> bool:
        return "error" in r["chat"] or "error" in r["reference"]

    def add_failed(scenario, r):
        which = " and ".join(side for side in ("chat", "reference") if "error" in r[side])
        add(
            scenario,
            f"FAILED ({which}): {(r['chat'].get('error') or r['reference'].get('error'))[:120]}",
            None,
            None,
            "",
            "runs",
            False,
        )

    r = results.get("fanout_closed_loop_100")
    if r:
        scenario = f"fan-out, {r['clients']} clients x {r['messages']} msgs, closed loop (acceptance)"
        if failed(r):
            add_failed(scenario, r)
        else:
            c, ref = r["chat"]["deliveries_per_s"], r["reference"]["deliveries_per_s"]
            add(scenario, "deliveries/s", c, ref, "/s", ">= 25% of reference", c / ref >= 0.25 if ref else None)
            add(
                scenario,
                "send->receive p99",
                r["chat"].get("p99_ms"),
                r["reference"].get("p99_ms"),
                "ms",
                "",
                None,
                higher_is_better=False,
            )
    r = results.get("connect_storm")
    if r:
        scenario = f"connect + disconnect storm, {r['count']} clients, {r['concurrency']} at a time"
        if failed(r):
            add_failed(scenario, r)
        else:
            add(
                scenario,
                "connects/s",
                r["chat"]["connects_per_s"],
                r["reference"]["connects_per_s"],
                "/s",
                "zero errors",
                r["chat"]["errors"] == 0,
            )
    for members, bound in ((10, None), (100, 50), (1000, 300)):
        r = results.get(f"fanout_latency_{members}")
        if not r:
            continue
        scenario = f"fan-out latency, {members} members, {r['rate']:.1f} msgs/s open loop"
        if failed(r):
            add_failed(scenario, r)
            continue
        chat_rate, reference_rate = r["chat"]["deliveries_per_s"], r["reference"]["deliveries_per_s"]
        add(scenario, "deliveries/s (offered load)", chat_rate, reference_rate, "/s", "", None)
        for q in ("p50_ms", "p99_ms"):
            target = f"<= {bound} ms" if bound and q == "p99_ms" else ""
            met = (r["chat"][q] <= bound) if target and r["chat"].get(q) is not None else None
            add(
                scenario,
                f"send->receive {q[:3]}",
                r["chat"].get(q),
                r["reference"].get(q),
                "ms",
                target,
                met,
                higher_is_better=False,
            )
    r = results.get("persisted")
    if r:
        scenario = f"persisted, {r['senders']} senders in {r['rooms']} rooms, closed loop"
        if failed(r):
            add_failed(scenario, r)
        else:
            c = r["chat"]
            add(
                scenario,
                "messages/s",
                c["persisted_per_s"],
                r["reference"]["persisted_per_s"],
                "/s",
                ">= 5,000/s",
                c["persisted_per_s"] >= 5000,
            )
            add(
                "persisted: history count == sent",
                "count",
                c.get("history_count"),
                None,
                "",
                f"== {c['sent']}",
                c.get("history_equals_sent"),
            )
    r = results.get("login")
    if r:
        add("POST /token, sequential", "p50", r["chat"]["p50_ms"], None, "ms", "", None)
    losses = sum(
        (v.get(side, {}).get("lost") or 0) + (v.get(side, {}).get("duplicates") or 0)
        for v in results.values()
        if isinstance(v, dict)
        for side in ("chat", "reference")
        if isinstance(v.get(side), dict)
    )
    add("every scenario", "lost + duplicated deliveries", losses, None, "", "0", losses == 0)
    log = results.get("server_log")
    if log:
        add("chat server log, whole run", "ERROR lines", log["error_lines"], None, "", "", None)
    return table


def fmt(value, unit="") -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if unit == "ms":
        return f"{value:,.1f} ms"
    if isinstance(value, float):
        return f"{value:,.0f}"
    return f"{value:,}"


def write_chart(table: list[dict], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    bars = [row for row in table if row["unit"] == "/s" and row["chat"] and row["reference"]]
    bars = [row for row in bars if "open loop" not in row["scenario"]]  # open loop: the offered load, not a limit
    fig, ax = plt.subplots(figsize=(9, 4))
    labels = [row["scenario"].split(",")[0] + "\n" + row["figure"] for row in bars]
    ax.bar(labels, [row["ratio"] * 100 for row in bars])
    ax.axhline(25, color="red", linestyle="--", label="acceptance target (25%)")
    ax.set_ylabel("chat server, % of the bare relay")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write_doc(report: dict, table: list[dict], chart: bool, path: Path) -> None:
    m = report["machine"]
    lines = [
        "# Performance",
        "",
        "Generated by `bench/run.py` (`make bench`) down to the hand-written notes at the end.",
        f"Run {report['started']} ({'smoke: figures meaningless' if report['smoke'] else 'full run'}),"
        f" raw results in `bench/results/{report['file']}`.",
        "",
        f"Machine: {m['cpu']}, {m['nproc']} CPUs (nproc), {m['memory']} RAM, Linux {m['kernel']}, "
        f"Python {m['python']}. Chat server: one `python -m chatproject.serve` (daphne) process, SQLite (WAL), "
        "in-process channel layer, rate limits off, LOG_LEVEL=WARNING. Reference: `bench/reference.py`, a bare "
        "`websockets` relay (no auth, no DB). Clients: `websockets`, permessage-deflate off, in child processes on "
        "the same machine (they share its cores with the server). Ratios compare the two servers within this run.",
        "",
        "| Scenario | Figure | Chat server | Reference | Ratio | Target | Met? |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in table:
        ratio = f"{row['ratio'] * 100:.1f}%" if row["ratio"] is not None else "—"
        met = {True: "yes", False: "**no**", None: "—"}[row["met"]]
        lines.append(
            f"| {row['scenario']} | {row['figure']} | {fmt(row['chat'], row['unit'])} | "
            f"{fmt(row['reference'], row['unit'])} | {ratio} | {row['target'] or '—'} | {met} |"
        )
    lines += ["", "For latency rows the ratio is reference ÷ chat (higher is better, as for throughput).", ""]
    if chart:
        lines += ["![Chat server throughput as a share of the bare relay](performance.png)", ""]
    else:
        lines += ["(No chart: matplotlib is not installed in this environment.)", ""]
    lines += ["## Targets", ""]
    for row in table:
        if row["met"] is None:
            continue
        verdict = "met" if row["met"] else "NOT met"
        detail = ""
        if row["met"] is False and row["ratio"] is not None and "25%" in row["target"]:
            detail = f": {row['ratio'] * 100:.1f}% of the reference, {25 / (row['ratio'] * 100):.1f}x short"
        elif row["met"] is False and row["unit"] == "ms" and row["chat"]:
            bound = float(row["target"].split()[1])
            detail = f": {row['chat']:.1f} ms, {row['chat'] / bound:.1f}x the bound"
        elif row["met"] is False and "5,000" in row["target"] and row["chat"]:
            detail = f": {row['chat']:,.0f}/s, {5000 / row['chat']:.1f}x short"
        lines.append(f"- {row['scenario']} — {row['figure']} {row['target']}: **{verdict}**{detail}.")
    log = report["results"].get("server_log") or {}
    if log.get("error_lines"):
        lines += ["", "ERROR lines the chat server logged during the run:", ""]
        lines += [f"- {count:,} x `{event}`" for event, count in group_events(log["by_event"]).items()]
    lines += ["", "## Not measured yet", ""]
    lines += [f"- {item}" for item in report["not_implemented"]]
    lines += [
        "",
        "## Method notes",
        "",
        "- Users and their access tokens are made in bulk with `manage.py shell -c` (one shared password hash): "
        "a `/token` login costs a full PBKDF2 hash, and a room of 1,000 would take minutes to log in. The "
        "WebSocket connect still verifies the JWT, loads the user and joins presence (connects/s includes auth).",
        "- Closed loop: each client sends its next message when its own previous one comes back. Open loop: "
        "messages at a fixed rate, round-robin over the room's members, each carrying its send time; every "
        "receiver records send→receive for every message.",
        "- Loss and duplicates: every receiver must see seq 1..N of its fresh room exactly once (relay: every "
        "client_id once); any miss or repeat fails the run.",
        "- Persisted: after the run every room's history is read back with `GET /messages?after=` and must be "
        "seq 1..N with N equal to what was sent to it.",
        "",
    ]
    kept = ""
    with contextlib.suppress(OSError):
        existing = path.read_text()
        if NOTES_MARKER in existing:
            kept = existing[existing.index(NOTES_MARKER) :]
    path.write_text("\n".join(lines) + "\n" + (kept or NOTES_MARKER + "\n"))


def main() -> int:
    parser = argparse.ArgumentParser(description="Chat server benchmark against a bare websockets relay.")
    parser.add_argument("--smoke", action="store_true", help="every scenario tiny, a few seconds, no timing asserted")
    parser.add_argument(
        "--with-1000",
        action="store_true",
        help="add the 1,000-member latency room (its join and leave broadcasts alone take several minutes)",
    )
    parser.add_argument("--report", metavar="JSON", help="only regenerate docs/performance.md from a results file")
    arguments = parser.parse_args()
    if arguments.report:
        report = json.loads(Path(arguments.report).read_text())
        table = rows(report["results"])
        write_doc(report, table, write_chart(table, CHART_PATH), DOC_PATH)
        print(f"regenerated {DOC_PATH.relative_to(REPO_ROOT)} from {arguments.report}")
        return 0
    smoke = arguments.smoke
    global SMOKE
    SMOKE = smoke
    raise_fd_limit()
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    with tempfile.TemporaryDirectory(prefix="chat-bench-") as tmp:
        bench = Bench(smoke, Path(tmp))
        try:
            bench.prepare(users=1000 if not smoke else 20, rooms=40)
            bench.fanout_closed_loop()
            acceptance = bench.results["fanout_closed_loop_100"]["chat"]
            half = acceptance.get("messages_per_s", 20.0) / 2  # half the acceptance load, in messages/s
            bench.connects()
            if smoke:
                bench.fanout_latency(10, rate=20, duration=0.5)
            else:
                bench.fanout_latency(10, rate=half, duration=10)
                bench.fanout_latency(100, rate=half, duration=10)
                if arguments.with_1000:
                    bench.fanout_latency(1000, rate=max(1.0, half * 100 / 1000), duration=10)
            bench.persisted()
            bench.logins()
        finally:
            bench.stop()
            bench.results["server_log"] = log_summary(bench.chat.log_path)
    report = {
        "started": started.isoformat(timespec="seconds"),
        "smoke": smoke,
        "file": f"{stamp}{'-smoke' if smoke else ''}.json",
        "machine": machine(),
        "results": bench.results,
        "failures": bench.failures,
        "not_implemented": NOT_IMPLEMENTED
        + ([] if arguments.with_1000 or smoke else ["Fan-out latency at 1,000 members (only with --with-1000)."]),
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / report["file"]).write_text(json.dumps(report, indent=2) + "\n")
    table = rows(bench.results)
    if smoke:  # the report code runs too, so that it cannot rot, but the real run's document stays
        with tempfile.TemporaryDirectory(prefix="chat-bench-doc-") as tmp:
            write_doc(report, table, write_chart(table, Path(tmp) / "performance.png"), Path(tmp) / "performance.md")
        print(f"results: bench/results/{report['file']} (smoke: docs/performance.md left as it was)")
    else:
        write_doc(report, table, write_chart(table, CHART_PATH), DOC_PATH)
        print(f"results: bench/results/{report['file']}; {DOC_PATH.relative_to(REPO_ROOT)}")
    if bench.failures:
        print("FAILED:\n  " + "\n  ".join(bench.failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
