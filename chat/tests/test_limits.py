"""Rate limits, connection limits and WebSocket tickets (issue: abuse resistance)."""

import asyncio
import json
import os
import socket
import time
import uuid

import pytest
import redis
from asgiref.sync import sync_to_async
from django.core.cache import cache
from django.core.cache.backends.redis import RedisSerializer
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from rest_framework.test import APIClient

from accounts.tests.factories import DEFAULT_PASSWORD, UserFactory
from chat.models import Message
from chat.tests.processes import run_python
from chat.tests.test_consumers import (
    CLOSE_UNAUTHENTICATED,
    access_token,
    connect,
    enter,
    member_event,
    receive,
    silent,
)
from chatproject import ratelimit
from chatproject.ratelimit import Rate, RateLimited, client_ip, hit, hit_many, parse_rate, peek

PASSWORD = "correct-horse-battery-9"


# --- rate syntax and client address ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("10/min", Rate(10, 60)),
        ("20/10s", Rate(20, 10)),
        ("1000/h", Rate(1000, 3600)),
        ("5/15min", Rate(5, 900)),
        ("3/2h", Rate(3, 7200)),
        ("0", None),
        ("0/min", None),
    ],
)
def test_parse_rate(text, rate):
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["", "10", "10/minute", "ten/min", "10/0s", "-1/min", "10/d"])
def test_parse_rate_refuses_nonsense(text):
    with pytest.raises(ImproperlyConfigured):
        parse_rate(text)


@pytest.mark.parametrize(
    ("meta", "trusted", "expected"),
    [
        ({"REMOTE_ADDR": "198.51.100.9", "HTTP_X_FORWARDED_FOR": "1.2.3.4"}, [], "198.51.100.9"),
        ({"REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR": "6.6.6.6, 203.0.113.5"}, ["10.0.0.0/8"], "203.0.113.5"),
        ({"REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR": "203.0.113.5, 10.0.0.7"}, ["10.0.0.0/8"], "203.0.113.5"),
        ({"REMOTE_ADDR": "10.0.0.2"}, ["10.0.0.2"], "10.0.0.2"),
    ],
    ids=["untrusted-peer", "trusted-proxy", "two-trusted-hops", "no-header"],
)
def test_client_ip_believes_forwarded_for_only_from_trusted_proxies(meta, trusted, expected):
    assert client_ip(meta, trusted) == expected


# --- counting -------------------------------------------------------------------------------

REDIS_CACHE_DB = "redis://127.0.0.1:6379/6"


class SerializerOfItsOwn(RedisSerializer):
    """A serializer the limiter does not know: its counts go through the cache API, not the pipeline."""


@pytest.fixture(params=["locmem", "redis", "redis-cache-api"])
def cache_backend(request):
    """Django's default cache as the server configures it: in process, or on Redis (keys of the test's
    own prefix, removed afterwards; the override ends before the suite clears the cache), with
    Django's serializer or, "redis-cache-api", one of a project's own."""
    if request.param == "locmem":
        with override_settings(CACHES={"default": {"BACKEND": "chatproject.cache.LocalCache"}}):
            yield request.param
        return
    client = redis.Redis.from_url(REDIS_CACHE_DB, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError:
        client.close()
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    prefix = f"ratelimit-test-{uuid.uuid4().hex}"
    redis_cache = {"BACKEND": "chatproject.cache.RedisCache", "LOCATION": REDIS_CACHE_DB}
    if request.param == "redis-cache-api":
        redis_cache["OPTIONS"] = {"serializer": f"{__name__}.{SerializerOfItsOwn.__name__}"}
    try:
        with override_settings(CACHES={"default": {**redis_cache, "KEY_PREFIX": prefix}}):
            yield request.param
    finally:
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)
        client.close()


def test_hit_many_counts_each_entry_in_order_across_calls_and_keys(cache_backend):
    rate, now = Rate(count=3, seconds=60), 1_000_000.0  # 20 s left in the window

    first = hit_many("messages", ["alice", "bob", "alice", "alice", "alice"], rate, now=now)
    second = hit_many("messages", ["bob", "bob", "bob", "alice"], rate, now=now + 1)

    verdicts = [None if v is None else round(v.retry_after) for v in first + second]
    assert verdicts == [None, None, None, None, 20, None, None, 19, 19]
    assert peek("messages", "alice", rate, now=now + 1) == pytest.approx(19)  # same counters as peek reads
    assert peek("messages", "carol", rate, now=now + 1) is None
    assert hit_many("messages", ["alice"], rate, now=now + 60) == [None]  # a new window


def test_hit_is_hit_many_of_one(cache_backend):
    rate = Rate(count=1, seconds=60)
    hit("login", "203.0.113.9", rate, now=60.0)
    with pytest.raises(RateLimited):
        hit("login", "203.0.113.9", rate, now=61.0)


@pytest.fixture
def alices_counter(cache_backend):
    """Redis, and the key of alice's message counter at a 10 s period in the window that holds 1,000,000 s."""
    from django.core.cache import caches

    client = redis.Redis.from_url(REDIS_CACHE_DB)
    try:
        yield client, caches["default"].make_and_validate_key("rl:messages:alice:10:100000")
    finally:
        client.close()


@pytest.mark.parametrize("cache_backend", ["redis", "redis-cache-api"], indirect=True)
def test_counters_on_redis_carry_their_windows_ttl(alices_counter):
    client, key = alices_counter

    hit_many("messages", ["alice", "alice"], Rate(count=5, seconds=10), now=1_000_000.0)

    assert (int(client.get(key)), 0 < client.ttl(key) <= 11) == (2, True)


@pytest.mark.parametrize("cache_backend", ["redis", "redis-cache-api"], indirect=True)
def test_a_counter_on_redis_left_without_a_ttl_gets_one_at_its_next_count(alices_counter):
    # What a key that expired between creation and increment would leave: a count and no expiry.
    client, key = alices_counter
    client.set(key, 3)
    assert client.ttl(key) == -1

    verdicts = hit_many("messages", ["alice", "alice", "alice"], Rate(count=5, seconds=10), now=1_000_000.0)

    assert [v is None for v in verdicts] == [True, True, False]  # counted on from 3: the 6th is refused
    assert (int(client.get(key)), 0 < client.ttl(key) <= 11) == (6, True)


def test_an_unreachable_cache_refuses_nothing(caplog):
    unreachable = {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:1/0"}
    with override_settings(CACHES={"default": unreachable}):  # undone before the cache is cleared
        verdicts = hit_many("messages", ["alice"] * 5, Rate(count=1, seconds=60))

    assert verdicts == [None] * 5
    assert "rate limit messages not counted" in caplog.text


def test_after_a_cache_failure_limits_leave_the_cache_alone_for_a_while(monkeypatch, caplog):
    calls = []

    def failing(deltas, *, timeout):
        calls.append(dict(deltas))
        raise ConnectionError("the cache does not answer")

    class Untouchable:
        def __getattr__(self, name):
            raise AssertionError(f"cache.{name} called during the pause")

    monkeypatch.setattr(ratelimit, "_add_to_counters", failing)
    rate = Rate(count=1, seconds=60)

    assert hit_many("messages", ["alice"] * 2, rate) == [None, None]
    monkeypatch.setattr(ratelimit, "cache", Untouchable())
    # Failed open at once, without a call: a cache that hangs is waited for once, not by every send.
    assert hit_many("messages", ["alice"] * 2, rate) == [None, None]
    assert peek("messages", "alice", rate) is None
    assert ratelimit.remembers("known:alice") is False
    ratelimit.remember("known:alice", 60)

    assert len(calls) == 1
    warnings = [r.getMessage() for r in caplog.records if "cache unavailable" in r.getMessage()]
    assert warnings == ["rate limit messages not counted (cache unavailable); the cache is left alone for 5 s"]

    monkeypatch.setattr(ratelimit, "_cache_paused_until", time.monotonic())  # the pause is over
    assert hit_many("messages", ["alice"], rate) == [None]
    assert len(calls) == 2  # tried again


# Run in a process of its own: the settings build the Redis cache from the environment.
HUNG_REDIS_CHECK = """
import json, django
django.setup()
from django.core.cache import cache
from chat.presence import presence
from chatproject.ratelimit import Rate, hit_many
verdicts = hit_many("messages", ["alice"] * 3, Rate(count=1, seconds=60))
verdicts += hit_many("messages", ["alice"] * 2, Rate(count=1, seconds=60))  # the cache left alone meanwhile
timeouts = {
    name: {key: pool.connection_kwargs[key] for key in ("socket_timeout", "socket_connect_timeout")}
    for name, pool in (
        ("cache", cache._cache.get_client(write=True).connection_pool),
        ("presence", presence._sync.connection_pool),
    )
}
print(json.dumps({"verdicts": verdicts, "timeouts": timeouts, "presence_async": presence.timeout}))
"""


def test_a_redis_that_never_answers_holds_one_rate_check_until_its_timeout_and_the_next_not_at_all():
    with socket.socket() as hung:  # connections are accepted (the kernel's backlog); nothing answers
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)
        env = {
            **{key: value for key, value in os.environ.items() if key != "DATABASE_URL"},
            "DJANGO_SETTINGS_MODULE": "chatproject.settings",
            "REDIS_URL": f"redis://127.0.0.1:{hung.getsockname()[1]}/0",
            "REDIS_TIMEOUT_SECONDS": "0.5",
        }
        # The bound is the settings', whatever the client library's default (5 s in redis-py 8, none
        # before): without one this run would wait forever and be killed.
        done = run_python(HUNG_REDIS_CHECK, env)

    assert done.returncode == 0, done.stderr
    bound = {"socket_timeout": 0.5, "socket_connect_timeout": 0.5}
    assert json.loads(done.stdout.splitlines()[-1]) == {
        "verdicts": [None] * 5,  # failed open: nothing refused
        "timeouts": {"cache": bound, "presence": bound},  # the connections' own, not the defaults
        "presence_async": 0.5,
    }
    assert done.stderr.count("rate limit messages not counted (cache unavailable)") == 1  # waited for once


# --- /register and /token per client address --------------------------------------------------


def assert_rate_limited(response, window: int = 60):
    body = response.json()
    assert response.status_code == 429
    assert body == {"detail": "Too many requests; try again later.", "retry_after": body["retry_after"]}
    assert isinstance(body["retry_after"], int) and 0 < body["retry_after"] <= window
    assert response["Retry-After"] == str(body["retry_after"])


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/register", "/token"])
def test_auth_endpoints_are_limited_per_address_and_a_forged_forwarded_for_changes_nothing(settings, path):
    settings.AUTH_RATE = "3/min"
    client = APIClient()
    body = {"username": "someone", "password": "wrong-password-1"}
    for n in range(3):
        response = client.post(path, body, format="json", REMOTE_ADDR="198.51.100.1", HTTP_X_FORWARDED_FOR=f"9.9.9.{n}")
        assert response.status_code != 429
    assert_rate_limited(
        client.post(path, body, format="json", REMOTE_ADDR="198.51.100.1", HTTP_X_FORWARDED_FOR="9.9.9.99")
    )
    assert client.post(path, body, format="json", REMOTE_ADDR="198.51.100.2").status_code != 429


@pytest.mark.django_db
def test_behind_a_trusted_proxy_each_client_has_its_own_limit(settings):
    settings.AUTH_RATE = "1/min"
    settings.TRUSTED_PROXIES = ["10.0.0.1"]
    client = APIClient()
    body = {"username": "x", "password": "y"}
    assert (
        client.post(
            "/token", body, format="json", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.1"
        ).status_code
        == 401
    )
    assert (
        client.post(
            "/token", body, format="json", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.2"
        ).status_code
        == 401
    )
    assert_rate_limited(
        client.post("/token", body, format="json", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.1")
    )


# --- failed logins per username ----------------------------------------------------------


@pytest.mark.django_db
def test_failed_logins_lock_the_username_for_new_addresses_but_not_for_known_ones(settings):
    settings.LOGIN_FAILURE_RATE = "3/15min"
    UserFactory(username="victim")
    client = APIClient()

    def login(password, address):
        return client.post("/token", {"username": "victim", "password": password}, format="json", REMOTE_ADDR=address)

    assert login(DEFAULT_PASSWORD, "192.0.2.10").status_code == 200  # the owner's usual address
    for n in range(3):  # an attacker guesses from three addresses
        assert login("guess-1234", f"203.0.113.{n}").status_code == 401
    assert_rate_limited(login("guess-1234", "203.0.113.50"), window=900)
    assert_rate_limited(login(DEFAULT_PASSWORD, "203.0.113.51"), window=900)  # even the right password, from elsewhere
    assert login(DEFAULT_PASSWORD, "192.0.2.10").status_code == 200  # the owner is not locked out


@pytest.mark.django_db
def test_a_locked_username_is_not_guessed_under_spellings_that_fold_to_it(settings):
    settings.LOGIN_FAILURE_RATE = "2/15min"
    UserFactory(username="isis")
    client = APIClient()

    def login(username, password):
        return client.post("/token", {"username": username, "password": password}, format="json")

    for _ in range(2):
        assert login("isis", "guess-1234").status_code == 401
    assert_rate_limited(login("isis", DEFAULT_PASSWORD), window=900)
    # PostgreSQL folds the dotless i and the long s to I and S: each spelling had a budget of its own.
    for spelling in ["\u0131sis", "is\u0131s", "\u0131\u017fi\u017f", "i\u017fis"]:
        assert login(spelling, DEFAULT_PASSWORD).status_code == 401


@pytest.mark.django_db
def test_failed_logins_from_a_known_address_are_limited_on_their_own(settings):
    settings.LOGIN_FAILURE_RATE = "2/min"
    UserFactory(username="owner")
    client = APIClient()
    body = {"username": "owner", "password": DEFAULT_PASSWORD}
    assert client.post("/token", body, format="json", REMOTE_ADDR="192.0.2.1").status_code == 200
    wrong = {**body, "password": "nope-nope-1"}
    assert client.post("/token", wrong, format="json", REMOTE_ADDR="192.0.2.1").status_code == 401
    assert client.post("/token", wrong, format="json", REMOTE_ADDR="192.0.2.1").status_code == 401
    assert_rate_limited(client.post("/token", body, format="json", REMOTE_ADDR="192.0.2.1"))


# --- message sends per user, across transports ------------------------------------------


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
async def test_message_rate_counts_rest_and_websocket_together(settings, sockets, alice):
    settings.CHAT_MESSAGE_RATE = "2/10s"
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access_token(alice)}")
    post = sync_to_async(client.post)
    socket = await enter(sockets, alice)

    assert (await post("/messages/general", {"content": "one"}, format="json")).status_code == 201
    assert (await receive(socket))["content"] == "one"
    await socket.send_json_to({"type": "message", "content": "two", "client_id": "c2"})
    assert (await receive(socket))["content"] == "two"
    await socket.send_json_to({"type": "message", "content": "three", "client_id": "c3"})
    error = await receive(socket)
    assert error == {
        "type": "error",
        "code": "rate_limited",
        "detail": error["detail"],
        "retry_after": error["retry_after"],
        "client_id": "c3",
    }
    assert isinstance(error["retry_after"], int) and 0 < error["retry_after"] <= 10
    assert_rate_limited(await post("/messages/general", {"content": "four"}, format="json"))

    assert [m.content for m in await sync_to_async(list)(Message.objects.order_by("seq"))] == ["one", "two"]
    await socket.send_json_to({"type": "typing"})  # the socket is still open and served
    assert await socket.receive_nothing(timeout=0.2)


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
async def test_message_rate_is_per_user(settings, sockets, alice, bob):
    settings.CHAT_MESSAGE_RATE = "1/10s"
    a = await enter(sockets, alice)
    await a.send_json_to({"type": "message", "content": "from alice"})
    assert (await receive(a))["content"] == "from alice"
    b = await enter(sockets, bob)
    await receive(a)  # bob's join
    await b.send_json_to({"type": "message", "content": "from bob"})
    assert (await receive(b))["content"] == "from bob"


# --- connections per user -----------------------------------------------------------------


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
async def test_one_connection_over_the_limit_is_accepted_then_closed_4029(settings, sockets, alice):
    settings.CHAT_MAX_CONNECTIONS_PER_USER = 2
    await enter(sockets, alice, "general")
    await enter(sockets, alice, "python")
    third = sockets(f"/ws/random?token={access_token(alice)}")
    connected, _ = await third.connect()
    assert connected is True
    assert await third.receive_output() == {"type": "websocket.close", "code": 4029}


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
async def test_sockets_of_one_user_connecting_at_once_stop_at_the_limit(settings, sockets, alice, bob):
    settings.CHAT_MAX_CONNECTIONS_PER_USER = 3
    bystander = await enter(sockets, bob)
    racing = [sockets(f"/ws/general?token={access_token(alice)}") for _ in range(8)]
    assert all(connected for connected, _ in await asyncio.gather(*[socket.connect() for socket in racing]))

    first_frames = await asyncio.gather(*[socket.receive_output() for socket in racing])

    closed = [frame for frame in first_frames if frame["type"] == "websocket.close"]
    assert closed == [{"type": "websocket.close", "code": 4029}] * 5
    assert await receive(bystander) == member_event("join", alice)  # once, for the three that joined
    assert await silent(bystander)


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
async def test_zero_means_unlimited_connections(settings, sockets, alice):
    settings.CHAT_MAX_CONNECTIONS_PER_USER = 0
    for _ in range(3):
        await connect(sockets, alice)


# --- tickets ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
async def test_a_ticket_opens_one_socket_once(sockets, alice):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access_token(alice)}")
    response = await sync_to_async(client.post)("/ws-ticket")
    assert response.status_code == 200
    assert response.json() == {"ticket": response.json()["ticket"], "expires_in": 30}
    ticket = response.json()["ticket"]

    first = sockets(f"/ws/general?ticket={ticket}")
    assert (await first.connect())[0] is True
    assert (await first.receive_json_from())["type"] == "presence"

    again = sockets(f"/ws/general?ticket={ticket}")
    assert (await again.connect())[0] is True
    assert await again.receive_output() == {"type": "websocket.close", "code": CLOSE_UNAUTHENTICATED["code"]}


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
async def test_an_expired_ticket_or_one_of_an_inactive_user_is_refused(settings, sockets, alice, bob):
    settings.WS_TICKET_SECONDS = 1
    client = APIClient()
    tickets = []
    for user in (alice, bob):
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {access_token(user)}")
        tickets.append((await sync_to_async(client.post)("/ws-ticket")).json()["ticket"])
    bob.is_active = False
    await sync_to_async(bob.save)()
    await asyncio.sleep(1.2)
    for ticket in tickets:
        expired = sockets(f"/ws/general?ticket={ticket}")
        assert (await expired.connect())[0] is True
        assert await expired.receive_output() == CLOSE_UNAUTHENTICATED
    await sync_to_async(cache.clear)()


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
async def test_a_ticket_of_a_user_deactivated_since_is_refused(sockets, alice):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access_token(alice)}")
    ticket = (await sync_to_async(client.post)("/ws-ticket")).json()["ticket"]
    alice.is_active = False
    await sync_to_async(alice.save)()
    socket = sockets(f"/ws/general?ticket={ticket}")
    assert (await socket.connect())[0] is True
    assert await socket.receive_output() == CLOSE_UNAUTHENTICATED


@pytest.mark.django_db
def test_tickets_are_limited_per_user(settings):
    settings.WS_TICKET_RATE = "2/min"
    alice, bob = UserFactory(), UserFactory()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access_token(alice)}")
    assert [client.post("/ws-ticket").status_code for _ in range(2)] == [200, 200]
    assert_rate_limited(client.post("/ws-ticket"))
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access_token(bob)}")
    assert client.post("/ws-ticket").status_code == 200


@pytest.mark.django_db
def test_a_flood_of_tickets_does_not_make_the_server_forget_a_failed_login_lock(settings):
    # Without Redis the limits share a process's cache with the tickets; Django's LocMemCache held 300
    # entries and dropped the oldest, counters included, whether or not they had expired.
    settings.LOGIN_FAILURE_RATE = "2/15min"
    UserFactory(username="victim")
    alice = UserFactory()
    login = APIClient()
    for _ in range(2):
        assert login.post("/token", {"username": "victim", "password": "guess-1234"}, format="json").status_code == 401
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access_token(alice)}")

    assert {client.post("/ws-ticket").status_code for _ in range(400)} == {200}

    assert_rate_limited(login.post("/token", {"username": "victim", "password": DEFAULT_PASSWORD}, format="json"), 900)


@pytest.mark.django_db
def test_a_ticket_needs_a_bearer_token():
    response = APIClient().post("/ws-ticket")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize("cache_backend", ["redis"], indirect=True)
def test_the_servers_redis_cache_is_counted_in_one_pipeline(cache_backend, monkeypatch):

    executed = []
    real_execute = redis.client.Pipeline.execute

    def recording(self, *args, **kwargs):
        executed.append(len(self.command_stack))
        return real_execute(self, *args, **kwargs)

    monkeypatch.setattr(redis.client.Pipeline, "execute", recording)

    hit_many("messages", ["alice", "bob", "alice"], Rate(count=5, seconds=10))

    assert executed == [4]  # INCRBY and EXPIRE for each of the two counters, one round trip
