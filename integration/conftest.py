"""Fixtures of the integration suite: nodes on the shared Redis and PostgreSQL, private ones for faults.

Run it with `.venv/bin/python -m pytest -q integration` (not part of the default test paths).
"""

from collections.abc import Iterator
from pathlib import Path

import pytest

from integration.backends import PrivatePostgres, PrivateRedis, fresh_database, postgres_url
from integration.cluster import LEDGER, POOL_MAX, Cluster, on_shared_services

LOG_CHECK = Path(__file__).with_name("test_logs.py")
LOG_TAIL_LINES = 40  # of each node log, appended to a failure report
LOG_LINE_CHARS = 300  # a JSON line with a traceback would drown the report
_first_log_of_module: dict[str, int] = {}


def pytest_collection_modifyitems(items):
    # The log check reads what every other test made the servers write: it runs last.
    items.sort(key=lambda item: item.path == LOG_CHECK)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        # The nodes this module started (its scenario fixture ran in the setup of its first test).
        first = _first_log_of_module.get(item.module.__name__, 0)
        for path in LEDGER.log_paths[first:]:
            if path.exists():
                lines = path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
                tail = "\n".join(line[:LOG_LINE_CHARS] for line in lines)
                report.sections.append((f"server log {path.parent.name}/{path.name} (last lines)", tail))
    return report


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _first_log_of_module.setdefault(item.module.__name__, len(LEDGER.log_paths))


# --- the machine's shared services ------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory) -> Iterator[Cluster]:
    """Two nodes on a fresh database of the shared PostgreSQL and an unused database of the shared Redis."""
    with on_shared_services(
        tmp_path_factory.mktemp("shared"), DATABASE_POOL_MIN="1", DATABASE_POOL_MAX=str(POOL_MAX)
    ) as cluster:
        yield cluster


# --- private services for fault tests ----------------------------------------------------------


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL cluster of the suite's own (initdb + pg_ctl), which fault tests may stop."""
    server = PrivatePostgres()
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="module")
def private_database_url(private_postgres) -> Iterator[str]:
    with fresh_database(private_postgres.port) as dbname:
        yield postgres_url(port=private_postgres.port, dbname=dbname)


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory) -> Iterator[PrivateRedis]:
    """A redis-server of the module's own, which fault tests may stop and start again on its port."""
    server = PrivateRedis(Path(tmp_path_factory.mktemp("redis")))
    server.start()
    try:
        yield server
    finally:
        server.stop()
