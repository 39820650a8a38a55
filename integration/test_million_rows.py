"""A million messages on real PostgreSQL: the export streams in bounded memory, the admin never counts them all.

One fresh database of the machine's PostgreSQL, migrated and seeded by integration.million_rows in
a process of its own (a big room of 1,000,000 messages, a small one of 10,000), dropped at the end.
export_messages runs as an operator would run it, in a child process whose peak resident memory is
read from the kernel when it exits. The admin pages are loaded once through Django's test client
(integration.million_rows admin) and each test checks one promise about what they ran and showed.
Pages of the big room's history must read its (room, seq) index, never the room's messages.
"""

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from chat.paginators import EstimatedCountPaginator
from integration.backends import SHARED_POSTGRES_PORT, fresh_database, postgres_url
from integration.million_rows import (
    BATCH_NEW,
    BIG,
    BIG_MESSAGES,
    DATE_RANGE_ENDS_BEFORE_NEWEST,
    MUTED_SEND,
    PAGE_SIZE,
    REPEATED_SEQS,
    SMALL,
    SMALL_MESSAGES,
    USERS,
)
from tests.conftest import REPO_ROOT

COMMAND_TIMEOUT = 300  # seconds: far above the ~30 s a million-message export takes
# What a million streamed messages may add to the peak memory of exporting ten thousand. Holding
# the million Message objects (with their room and user) would take well over a gigabyte.
EXPORT_GROWTH_LIMIT_KIB = 32 * 1024


@dataclass(frozen=True)
class Database:
    env: dict[str, str]
    facts: dict


@dataclass(frozen=True)
class Run:
    returncode: int
    peak_rss_kib: int
    stdout: str
    stderr: str


def django_env(database_url: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "DATABASE_URL": database_url,
        "DATABASE_POOL_MIN": "1",
        "DATABASE_POOL_MAX": "2",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "LOG_LEVEL": "WARNING",
    }


# The peak RSS the kernel reports for a child includes the memory of the process it was forked
# from, up to exec: this one (pytest) is bigger than an export. So a small launcher runs the command
# and reports its children's peak (ru_maxrss, KiB on Linux) to the file named first.
LAUNCHER = """
import resource, subprocess, sys
returncode = subprocess.call(sys.argv[3:], timeout=float(sys.argv[2]))
with open(sys.argv[1], "w") as out:
    out.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(returncode)
"""


def run_django(args: list[str], env: dict[str, str]) -> Run:
    """Run `python <args>` in the repository and wait for it, measuring its peak RSS."""
    with tempfile.TemporaryDirectory() as workdir:
        peak = Path(workdir) / "peak_rss_kib"
        done = subprocess.run(
            [sys.executable, "-c", LAUNCHER, str(peak), str(COMMAND_TIMEOUT), sys.executable, *args],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT + 30,
        )
        peak_rss_kib = int(peak.read_text()) if peak.exists() else 0
    return Run(done.returncode, peak_rss_kib, done.stdout, done.stderr)


def run_helper(command: str, env: dict[str, str]) -> dict:
    run = run_django(["-m", "integration.million_rows", command], env)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


@pytest.fixture(scope="module")
def database() -> Iterator[Database]:
    with fresh_database(SHARED_POSTGRES_PORT) as dbname:
        env = django_env(postgres_url(port=SHARED_POSTGRES_PORT, dbname=dbname))
        migrate = run_django(["manage.py", "migrate", "--noinput"], env)
        assert migrate.returncode == 0, migrate.stderr
        started = time.monotonic()
        facts = run_helper("seed", env)
        print(f"seeded {facts['messages']} messages in {time.monotonic() - started:.1f} s")
        yield Database(env=env, facts=facts)


# --- export_messages ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Exports:
    small: Run
    big: Run
    big_path: Path


@pytest.fixture(scope="module")
def exports(database, tmp_path_factory) -> Exports:
    workdir = tmp_path_factory.mktemp("exports")

    def export(room: str) -> Run:
        return run_django(
            ["manage.py", "export_messages", room, "--output", str(workdir / f"{room}.jsonl")], database.env
        )

    return Exports(small=export(SMALL), big=export(BIG), big_path=workdir / f"{BIG}.jsonl")


def test_the_database_holds_the_seeded_messages(database):
    assert database.facts["messages"] == BIG_MESSAGES + SMALL_MESSAGES


def test_exporting_a_million_messages_takes_no_more_memory_than_ten_thousand(exports):
    assert (exports.small.returncode, exports.big.returncode) == (0, 0), exports.big.stderr
    figures = (
        f"export peak RSS: {exports.small.peak_rss_kib} KiB for {SMALL_MESSAGES} messages, "
        f"{exports.big.peak_rss_kib} KiB for {BIG_MESSAGES}"
    )
    print(figures)
    assert exports.big.peak_rss_kib - exports.small.peak_rss_kib < EXPORT_GROWTH_LIMIT_KIB, figures


def test_the_export_has_every_message_once_in_seq_order(exports):
    out_of_order, first, last = [], None, None
    with exports.big_path.open(encoding="utf-8") as exported:
        for expected_seq, line in enumerate(exported, start=1):
            last = json.loads(line)
            first = first or last
            if last["seq"] != expected_seq and len(out_of_order) < 5:
                out_of_order.append((expected_seq, last["seq"]))
    assert out_of_order == []
    assert (first["seq"], first["content"]) == (1, "message 1")
    assert (last["seq"], last["content"]) == (BIG_MESSAGES, f"message {BIG_MESSAGES}")


# --- the message changelist --------------------------------------------------------------------


@pytest.fixture(scope="module")
def admin_pages(database) -> dict[str, dict]:
    return run_helper("admin", database.env)


def counts(page: dict) -> list[str]:
    return [sql for sql in page["message_queries"] if "COUNT(" in sql.upper()]


@pytest.mark.parametrize(
    "case",
    ["plain", "room big", "room small", "room small last page", "date range", "search username", "facets asked for"],
)
def test_a_changelist_page_counts_no_messages(admin_pages, case):
    page = admin_pages[case]
    assert page["status"] == 200
    assert counts(page) == []
    assert page["estimated"] is True
    assert len(page["shown"]) == PAGE_SIZE


@pytest.mark.parametrize(
    ("case", "room", "newest_seq", "step"),
    [
        ("plain", BIG, BIG_MESSAGES, 1),
        ("room big", BIG, BIG_MESSAGES, 1),
        ("room small", SMALL, SMALL_MESSAGES, 1),
        ("room small last page", SMALL, PAGE_SIZE, 1),
        # The big room has a message a second, the newest at seq BIG_MESSAGES; the range excludes its end.
        ("date range", BIG, BIG_MESSAGES - int(DATE_RANGE_ENDS_BEFORE_NEWEST.total_seconds()) - 1, 1),
        ("search username", BIG, BIG_MESSAGES - 7, USERS),  # user3 wrote every tenth message
        ("search content", BIG, BIG_MESSAGES, 1),
    ],
)
def test_a_changelist_page_lists_the_newest_first(admin_pages, case, room, newest_seq, step):
    shown = admin_pages[case]["shown"]
    assert [row[:2] for row in shown] == [[room, newest_seq - i * step] for i in range(PAGE_SIZE)]
    prefix = "message" if room == BIG else "small"
    assert shown[0][2:] == [f"user{newest_seq % USERS}", f"{prefix} {newest_seq}"]


def test_a_page_past_the_end_of_an_estimated_count_is_empty(admin_pages):
    page = admin_pages["room small past the end"]
    assert (page["status"], page["shown"], counts(page)) == (200, [], [])


def test_a_search_the_planner_underestimates_is_checked_only_up_to_a_bound(admin_pages):
    page = admin_pages["search content"]
    bound = EstimatedCountPaginator.EXACT_UP_TO + 1
    # A million match. Taken as the count, an estimate up to 200 would offer "Show all" of them, one
    # up to 100 would render them all at once. The check reads at most `bound` ids; it counts nothing.
    assert page["planner_rows"] < bound
    assert counts(page) == []
    assert any(f"LIMIT {bound}" in sql.upper() for sql in page["message_queries"])
    assert (page["result_count"], page["estimated"], len(page["shown"])) == (bound, True, PAGE_SIZE)


@pytest.mark.parametrize("case", ["plain", "room big", "room small", "date range"])
def test_a_filtered_page_reads_an_index_in_order(admin_pages, case):
    plan = admin_pages[case]["plan"]
    assert "Seq Scan on chat_message" not in plan
    assert "Index Scan Backward using chat_message_" in plan


def test_the_newest_page_of_a_small_room_uses_the_room_and_date_index(admin_pages):
    assert "Index Scan Backward using chat_message_room_created_idx" in admin_pages["room small"]["plan"]


# --- a group-commit batch ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def batch(database) -> dict:
    return run_helper("batch", database.env)


def test_a_batch_looks_up_repeated_client_ids_in_the_index_not_by_reading_the_rooms(batch):
    assert "Seq Scan on chat_message" not in batch["plan"], batch["plan"]
    assert "Scan using chat_message_user_room_client_id_unique" in batch["plan"], batch["plan"]  # index or bitmap


def test_a_batch_answers_repeats_with_the_stored_messages_refuses_the_muted_and_stores_the_rest_in_seq_order(batch):
    repeats = [[False, BIG, seq, f"message {seq}"] for seq in REPEATED_SEQS]
    new, last_seqs = [], {BIG: BIG_MESSAGES, SMALL: SMALL_MESSAGES}
    for n in range(BATCH_NEW):
        if (n % USERS, n % 2) == (MUTED_SEND % USERS, MUTED_SEND % 2):  # the muted author, in the small room
            new.append(["refused", "muted"])
            continue
        room = (BIG, SMALL)[n % 2]
        last_seqs[room] += 1
        new.append([True, room, last_seqs[room], f"new {n}"])
    assert batch["outcomes"] == repeats + new


# --- a page of history -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def history_pages(database) -> dict:
    return run_helper("history", database.env)


@pytest.mark.parametrize(
    "page, seqs",
    [
        ("newest", list(range(BIG_MESSAGES, BIG_MESSAGES - 50, -1))),
        ("before", list(range(499_999, 499_949, -1))),
        ("after", list(range(500_001, 500_051))),
        ("skip", list(range(BIG_MESSAGES - 200, BIG_MESSAGES - 210, -1))),
    ],
)
def test_a_history_page_is_one_query_reading_the_rooms_index_not_the_room(history_pages, page, seqs):
    read = history_pages[page]
    assert (read["seqs"], read["statements"]) == (seqs, 1)
    assert "Seq Scan on chat_message" not in read["plan"], read["plan"]
    assert "using chat_message_room_seq_unique on chat_message m" in read["plan"], read["plan"]  # Index Scan (Backward)
