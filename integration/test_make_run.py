"""`make run` as the README gives it (issue 2), on a copy of the repository with no venv, database or key.

It creates the venv, installs, migrates and serves plain HTTP on loopback; the README's curl walk-through
works against it; it works again in a row (same venv and database), and again after `git clean -fdx`.
No environment reaches it but what a new shell has (PATH without this venv, HOME, pip's own settings).
"""

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import ServerProcess, free_port, wait_healthy

REPO_ROOT = Path(__file__).resolve().parent.parent
FIRST_START_SECONDS = 600  # a venv and its packages from pip's cache, on a loaded 2-core machine
START_SECONDS = 120
STOP_SECONDS = 20
PORT_ATTEMPTS = 3
PASSWORD = "correct-horse-9"

pytestmark = pytest.mark.skipif(not (shutil.which("git") and shutil.which("make")), reason="needs git and make")


def copy_of_the_repository(target: Path) -> Path:
    """The working tree's tracked and new files (not ignored ones: no .venv, database or key), committed."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = REPO_ROOT / name
        if source.is_file():  # a deleted file is still listed until its deletion is committed
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    git = ["git", "-c", "user.name=make-run", "-c", "user.email=make-run@localhost"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "copy"]):
        subprocess.run([*git, *command], cwd=target, check=True, capture_output=True)
    return target


def new_shell_environment() -> dict[str, str]:
    """PATH without this test run's venv, HOME, and pip's settings: nothing of the app's own."""
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != venv_bin)
    env = {"PATH": path or "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}
    env.update({key: value for key, value in os.environ.items() if key.startswith("PIP_")})
    return env


@contextmanager
def make_run(checkout: Path, log: Path, timeout: float) -> Iterator[ServerProcess]:
    """`make run` on a free port until the block ends, once /healthz answers 200 (tests/conftest.py's
    client and wait). A port taken between probing and binding is tried again on another."""
    for attempt in range(PORT_ATTEMPTS):
        port = free_port()
        with log.open("wb") as output:
            process = subprocess.Popen(
                ["make", "run", f"PORT={port}"],
                cwd=checkout,
                env=new_shell_environment(),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # make, the server, and anything they started go together
            )
        server = ServerProcess(port=port, workdir=checkout, env={}, process=process, log_path=log)
        try:
            if wait_healthy(server, timeout):
                yield server
                return
            if "Address already in use" not in server.log() or attempt == PORT_ATTEMPTS - 1:
                pytest.fail(f"make run exited with {process.returncode}:\n{server.log()[-4000:]}")
        finally:
            stop_group(process)


def stop_group(process: subprocess.Popen) -> None:
    """Stop make and the server it started: they share a process group."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def walk_through(server: ServerProcess) -> None:
    """README, "Walk-through with curl": register, token, me, rooms, post, history."""
    registered = server.post("/register", json_body={"username": "alice", "password": PASSWORD})
    assert (registered.status, registered.json()) == (201, {"id": 1, "username": "alice"})
    tokens = server.post("/token", form={"username": "alice", "password": PASSWORD})
    assert tokens.status == 200, tokens.body
    token = tokens.json()["access_token"]
    me = server.get("/users/me", token=token)
    assert (me.status, me.json()["id"], me.json()["username"]) == (200, 1, "alice")
    rooms = server.get("/rooms")
    assert (
        rooms.status == 200
        and {"name": "general", "title": "General", "online": 0, "archived": False} in rooms.json()["rooms"]
    )
    posted = server.post("/messages/general", json_body={"content": "hello", "client_id": "c-1"}, token=token)
    assert posted.status == 201, posted.body
    message = posted.json()
    assert (message["seq"], message["content"], message["client_id"], message["user"]) == (
        1,
        "hello",
        "c-1",
        {"id": 1, "username": "alice"},
    )
    history = server.get("/messages/general?limit=20", token=token)
    assert (history.status, history.json()) == (200, [message])


def test_make_run_serves_from_nothing_twice_in_a_row_and_after_git_clean(tmp_path):
    checkout = copy_of_the_repository(tmp_path / "checkout")

    with make_run(checkout, tmp_path / "first.log", FIRST_START_SECONDS) as server:
        walk_through(server)
        missing = server.get("/no-such-page")
        assert (missing.status, missing.json()) == (404, {"detail": "Not found."})  # DEBUG off: no debug page
    assert (checkout / ".venv").is_dir() and (checkout / "db.sqlite3").is_file()

    with make_run(checkout, tmp_path / "second.log", START_SECONDS) as server:  # the same venv and database
        tokens = server.post("/token", form={"username": "alice", "password": PASSWORD})
        assert tokens.status == 200, tokens.body
        history = server.get("/messages/general", token=tokens.json()["access_token"])
        assert [m["content"] for m in history.json()] == ["hello"]

    subprocess.run(["git", "clean", "-fdxq"], cwd=checkout, check=True)
    assert not (checkout / ".venv").exists() and not (checkout / "db.sqlite3").exists()
    with make_run(checkout, tmp_path / "after-clean.log", FIRST_START_SECONDS) as server:
        walk_through(server)  # a new database: alice registers again as user 1
