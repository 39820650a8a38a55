"""The chat app's own test suite once more, on PostgreSQL: `make test` runs it on SQLite.

The group-commit batch takes a path of its own on PostgreSQL (one array per column, bound on the
server: chat/services.py), and the tests marked `on_postgresql` run only there. One fresh database of
the machine's PostgreSQL; pytest-django creates its test database beside it (test_<name>). Both are
dropped at the end.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

from integration.backends import SHARED_POSTGRES_PORT, fresh_database, postgres_admin, postgres_url

REPO_ROOT = Path(__file__).resolve().parent.parent
SUITE_TIMEOUT_SECONDS = 900


def test_the_chat_suite_passes_on_postgresql_with_nothing_skipped():
    with fresh_database(SHARED_POSTGRES_PORT) as name:
        env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
        env["DATABASE_URL"] = postgres_url(port=SHARED_POSTGRES_PORT, dbname=name)
        try:
            done = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "--create-db", "chat"],
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=SUITE_TIMEOUT_SECONDS,
            )
        finally:
            # The writer's thread may still hold a connection to the test database.
            with postgres_admin(SHARED_POSTGRES_PORT) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "test_{name}" WITH (FORCE)')

    report = done.stdout[-6000:] + done.stderr[-2000:]
    assert done.returncode == 0, report
    summary = done.stdout.strip().splitlines()[-1]
    assert re.search(r"\b\d+ passed\b", summary), report
    assert not re.search(r"skipped|failed|error", summary), report  # the PostgreSQL-only tests ran too
