"""`make run` as the README gives it (issue 2), on a copy of the repository with no venv, database or key.

It creates the venv, installs, migrates and serves plain HTTP on loopback; the README's curl walk-through
works against it; it works again in a row (same venv and database), and again after `git clean -fdx`.
No environment reaches it but what a new shell has (PATH without this venv, HOME, pip's own settings).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import free_port

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


def call(base: str, method: str, path: str, *, body=None, form=None, token=None) -> tuple[int, object]:
    headers, data = {}, None
    if body is not None:
        headers["Content-Type"], data = "application/json", json.dumps(body).encode()
    if form is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        data = "&".join(f"{key}={value}" for key, value in form.items()).encode()
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(base + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read() or b"null")


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:]


@contextmanager
def make_run(checkout: Path, log: Path, timeout: float) -> Iterator[str]:
    """`make run` on a free port until the block ends; yields its base URL once /healthz answers 200.
    A port taken between probing and binding is tried again on another."""
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
        try:
            base = serving(process, port, log, timeout)
            if base is not None:
                yield base
                return
            if "Address already in use" not in tail(log) or attempt == PORT_ATTEMPTS - 1:
                pytest.fail(f"make run exited with {process.returncode}:\n{tail(log)}")
        finally:
            stop(process)


def serving(process: subprocess.Popen, port: int, log: Path, timeout: float) -> str | None:
    """The base URL once /healthz answers 200; None if make run exited first."""
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        try:
            if call(base, "GET", "/healthz")[0] == 200:
                return base
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"make run did not serve within {timeout:.0f} s:\n{tail(log)}")
        time.sleep(0.5)
    return None


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def walk_through(base: str) -> None:
    """README, "Walk-through with curl": register, token, me, rooms, post, history."""
    assert call(base, "POST", "/register", body={"username": "alice", "password": PASSWORD}) == (
        201,
        {"id": 1, "username": "alice"},
    )
    status, tokens = call(base, "POST", "/token", form={"username": "alice", "password": PASSWORD})
    assert status == 200, tokens
    token = tokens["access_token"]
    status, me = call(base, "GET", "/users/me", token=token)
    assert (status, me["id"], me["username"]) == (200, 1, "alice")
    status, rooms = call(base, "GET", "/rooms")
    assert status == 200 and {"name": "general", "title": "General", "online": 0} in rooms["rooms"], rooms
    status, posted = call(base, "POST", "/messages/general", body={"content": "hello", "client_id": "c-1"}, token=token)
    assert status == 201, posted
    assert (posted["seq"], posted["content"], posted["client_id"], posted["user"]) == (
        1,
        "hello",
        "c-1",
        {"id": 1, "username": "alice"},
    )
    assert call(base, "GET", "/messages/general?limit=20", token=token) == (200, [posted])


def test_make_run_serves_from_nothing_twice_in_a_row_and_after_git_clean(tmp_path):
    checkout = copy_of_the_repository(tmp_path / "checkout")

    with make_run(checkout, tmp_path / "first.log", FIRST_START_SECONDS) as base:
        walk_through(base)
        status, error = call(base, "GET", "/no-such-page")
        assert (status, error) == (404, {"detail": "Not found."})  # DEBUG off: no debug page
    assert (checkout / ".venv").is_dir() and (checkout / "db.sqlite3").is_file()

    with make_run(checkout, tmp_path / "second.log", START_SECONDS) as base:  # the same venv and database
        status, tokens = call(base, "POST", "/token", form={"username": "alice", "password": PASSWORD})
        assert status == 200, tokens
        assert call(base, "GET", "/messages/general", token=tokens["access_token"])[1][0]["content"] == "hello"

    subprocess.run(["git", "clean", "-fdxq"], cwd=checkout, check=True)
    assert not (checkout / ".venv").exists() and not (checkout / "db.sqlite3").exists()
    with make_run(checkout, tmp_path / "after-clean.log", FIRST_START_SECONDS) as base:
        walk_through(base)  # a new database: alice registers again as user 1
