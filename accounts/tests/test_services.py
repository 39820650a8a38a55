"""accounts.services: where registration and login hash passwords, and how many hash at once."""

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
from django.contrib.auth.hashers import MD5PasswordHasher
from django.contrib.auth.models import Permission
from django.db import connection, connections
from django.test import RequestFactory

from accounts.models import User
from accounts.services import user_login, user_may_ban, user_register, username_is_taken
from accounts.tests.factories import DEFAULT_PASSWORD, UserFactory

WAIT_SECONDS = 10.0
# Long enough for a second login to reach the hasher when nothing holds it back; a slow machine can
# only make the test pass when it should not, never fail when it should pass.
OVERTAKE_SECONDS = 0.5

# Committed data, so that logins on other threads (other connections) see the users. Serialized
# rollback like the admin tests: a flush without it would recreate the content types those tests
# reload, and they would fail after this module.
pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


class RecordingHasher(MD5PasswordHasher):
    """Records whether each hash ran inside a transaction and how many ran at once; can hold them."""

    lock = threading.Lock()

    @classmethod
    def reset(cls, *, hold: bool = False) -> None:
        cls.in_transaction = []
        cls.hashing = cls.most_at_once = 0
        cls.entered = threading.Semaphore(0)  # released once per hash begun
        cls.released = threading.Event()
        if not hold:
            cls.released.set()

    def encode(self, password, salt):
        cls = type(self)
        with cls.lock:
            cls.in_transaction.append(connection.in_atomic_block)
            cls.hashing += 1
            cls.most_at_once = max(cls.most_at_once, cls.hashing)
        cls.entered.release()
        try:
            if not cls.released.wait(WAIT_SECONDS):
                raise AssertionError("the hash was never released")
            return super().encode(password, salt)
        finally:
            with cls.lock:
                cls.hashing -= 1


@pytest.fixture
def hasher(settings):
    RecordingHasher.reset()
    settings.PASSWORD_HASHERS = [f"{__name__}.RecordingHasher"]
    yield RecordingHasher
    RecordingHasher.released.set()  # never leave a thread waiting


def login(username: str, password: str = DEFAULT_PASSWORD) -> User | None:
    request = RequestFactory().post("/token")
    return user_login(request=request, username=username, password=password, client_ip="192.0.2.1")


def in_a_thread(pool: ThreadPoolExecutor, function, *args) -> Future:
    """Run function on one of the pool's threads, as a request runs on its own, closing its connections after."""

    def run():
        try:
            return function(*args)
        finally:
            connections.close_all()

    return pool.submit(run)


def test_register_hashes_the_password_outside_any_transaction(hasher):
    # On SQLite a transaction holds the database's write lock: every chat message would wait for the hash.
    user = user_register(username="bob", password=DEFAULT_PASSWORD)

    assert hasher.in_transaction == [False]
    assert User.objects.get(pk=user.pk).check_password(DEFAULT_PASSWORD)


def test_login_hashes_the_password_outside_any_transaction(hasher):
    UserFactory(username="alice")
    hasher.reset()

    assert login("alice").username == "alice"
    assert hasher.in_transaction == [False]


@pytest.mark.parametrize("concurrency", [1, 2])
def test_no_more_than_password_hash_concurrency_logins_hash_at_once(settings, hasher, concurrency):
    settings.PASSWORD_HASH_CONCURRENCY = concurrency
    usernames = [f"user{n}" for n in range(concurrency + 1)]
    for username in usernames:
        UserFactory(username=username)
    hasher.reset(hold=True)

    with ThreadPoolExecutor(len(usernames)) as pool:
        logins = [in_a_thread(pool, login, username) for username in usernames]
        for _ in range(concurrency):
            assert hasher.entered.acquire(timeout=WAIT_SECONDS), "a login never reached the hasher"
        overtaken = hasher.entered.acquire(timeout=OVERTAKE_SECONDS)
        hasher.released.set()
        logged_in = [future.result(timeout=WAIT_SECONDS) for future in logins]

    assert not overtaken, "a login hashed while every slot was taken"
    assert hasher.most_at_once == concurrency
    assert [user.username for user in logged_in] == usernames


def test_zero_concurrency_means_no_limit(settings, hasher):
    settings.PASSWORD_HASH_CONCURRENCY = 0
    usernames = ["alice", "bob", "carol"]
    for username in usernames:
        UserFactory(username=username)
    hasher.reset(hold=True)

    with ThreadPoolExecutor(len(usernames)) as pool:
        logins = [in_a_thread(pool, login, username) for username in usernames]
        for _ in usernames:
            assert hasher.entered.acquire(timeout=WAIT_SECONDS), "a login waited although nothing limits them"
        hasher.released.set()
        assert [future.result(timeout=WAIT_SECONDS).username for future in logins] == usernames


def test_a_registration_queued_for_a_slot_gives_its_database_connection_back(settings, hasher, monkeypatch):
    # On PostgreSQL the connection would be one of the pool's, idle while the chat waits for it.
    # Connections there are not persistent (CONN_MAX_AGE 0); persistent ones are kept.
    monkeypatch.setitem(connections.settings["default"], "CONN_MAX_AGE", 0)
    settings.PASSWORD_HASH_CONCURRENCY = 1
    UserFactory(username="alice")
    hasher.reset(hold=True)
    connection_of_the_registration = []

    def register():
        assert not username_is_taken("bob")  # opens this thread's connection, as the view's validation does
        connection_of_the_registration.append(connections["default"])
        return user_register(username="bob", password=DEFAULT_PASSWORD)

    with ThreadPoolExecutor(2) as pool:
        logging_in = in_a_thread(pool, login, "alice")
        assert hasher.entered.acquire(timeout=WAIT_SECONDS), "the login never reached the hasher"
        registering = in_a_thread(pool, register)
        deadline = time.monotonic() + WAIT_SECONDS
        while not connection_of_the_registration or connection_of_the_registration[0].connection is not None:
            assert time.monotonic() < deadline, "the queued registration kept its database connection"
            time.sleep(0.01)
        hashes_begun_while_queued = hasher.most_at_once
        hasher.released.set()
        assert logging_in.result(timeout=WAIT_SECONDS).username == "alice"
        assert registering.result(timeout=WAIT_SECONDS).username == "bob"

    assert hashes_begun_while_queued == 1  # the login's: the registration was still waiting for the slot
    assert User.objects.get(username="bob").check_password(DEFAULT_PASSWORD)


def test_who_may_ban_whom():
    moderator = UserFactory(username="mod", is_staff=True)
    moderator.user_permissions.add(Permission.objects.get(codename="ban_user"))
    staff = UserFactory(username="staff", is_staff=True)  # no ban permission
    root = UserFactory(username="root", is_staff=True, is_superuser=True)
    alice = UserFactory(username="alice")
    actors, targets = [moderator, staff, root], [moderator, staff, root, alice]

    allowed = {
        (actor.username, target.username)
        for actor in actors
        for target in targets
        if user_may_ban(actor=User.objects.get(pk=actor.pk), user=target)  # fresh: permissions are cached
    }

    assert allowed == {("mod", "staff"), ("mod", "alice"), ("root", "mod"), ("root", "staff"), ("root", "alice")}
