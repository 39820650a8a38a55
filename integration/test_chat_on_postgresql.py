"""The apps' own test suites (chat, accounts, chatproject) once more, on PostgreSQL: `make test` runs
them on SQLite.

The group-commit batch takes a path of its own on PostgreSQL (one array per column, bound on the
server: chat/services.py), and the tests marked `on_postgresql` run only there (those marked
`on_sqlite`, of the embedded configuration's settings, only on SQLite). One fresh database of
the machine's PostgreSQL; pytest-django creates its test database beside it (test_<name>). Both are
dropped at the end.
"""

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import psycopg

from integration.backends import SHARED_POSTGRES_PORT, fresh_database, postgres_admin, postgres_url

REPO_ROOT = Path(__file__).resolve().parent.parent
SUITE_TIMEOUT_SECONDS = 900
SUITES = ("chat", "accounts", "chatproject")


def test_the_app_suites_pass_on_postgresql_with_their_postgresql_only_tests():
    with fresh_database(SHARED_POSTGRES_PORT) as name:
        env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
        env["DATABASE_URL"] = postgres_url(port=SHARED_POSTGRES_PORT, dbname=name)
        suite = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "--create-db", *SUITES],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # the servers its tests start go with it on a timeout
        )
        try:
            stdout, stderr = suite.communicate(timeout=SUITE_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(suite.pid, signal.SIGKILL)
            stdout, stderr = suite.communicate()
        finally:
            # The writer's thread may still hold a connection to the test database.
            with contextlib.suppress(psycopg.Error), postgres_admin(SHARED_POSTGRES_PORT) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "test_{name}" WITH (FORCE)')

    report = stdout[-6000:] + stderr[-2000:]
    assert suite.returncode == 0, report
    summary = stdout.strip().splitlines()[-1]
    assert re.search(r"\b\d+ passed\b", summary) and not re.search(r"failed|error", summary), report
    for suite in SUITES:  # every suite ran
        assert re.search(rf"^PASSED {suite}/tests/", stdout, re.M), report
    # The tests that run only on PostgreSQL ran, and passed (a skip would name them under SKIPPED).
    for module in ("test_group_commit", "test_selectors"):
        assert re.search(rf"^PASSED chat/tests/{module}\.py::test_on_postgresql_", stdout, re.M), report
