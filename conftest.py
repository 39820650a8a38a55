"""Fixtures shared by every test suite."""

import io
import json
import logging

import pytest
from rest_framework.test import APIClient

from accounts.tokens import token_pair_issue
from chat.presence import presence


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # Real hashing (PBKDF2) stays on in the server-process tests; in-process tests need speed.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


ONE_RATE_WINDOW_AT = 6_000_005.0  # 5 s into a 10 s window and into a minute, 605 s into 15 minutes


@pytest.fixture(autouse=True)
def _no_rate_limits(settings, monkeypatch):
    """Limits are off unless a test sets them (chat/tests/test_limits.py); counters start empty.

    The limiter's clock stands still at ONE_RATE_WINDOW_AT: windows are fixed, so a window boundary
    falling between a test's requests would start a fresh count and let through the one that the
    test expects refused. Tests of the windows themselves pass `now`.
    """
    from django.core.cache import cache

    from chatproject import ratelimit

    monkeypatch.setattr(ratelimit, "clock", lambda: ONE_RATE_WINDOW_AT)
    settings.AUTH_RATE = settings.LOGIN_FAILURE_RATE = settings.CHAT_MESSAGE_RATE = settings.WS_TICKET_RATE = "0"
    settings.ROOM_CREATE_RATE = "0"
    cache.clear()
    ratelimit._cache_paused_until = 0.0  # a cache failure of an earlier test is forgotten
    yield
    cache.clear()
    ratelimit._cache_paused_until = 0.0


@pytest.fixture(autouse=True)
def _no_outage_remembered():
    """An outage of an earlier test is forgotten: chat.events pauses layer sends after a channel layer
    outage, chat.writer refuses sends for a while after a database outage."""
    from chat.events import _LayerOutage
    from chat.writer import _Outage

    def forget():
        _LayerOutage.paused_until, _LayerOutage.failing, _LayerOutage.skipped = 0.0, False, 0
        _Outage.paused_until, _Outage.failing, _Outage.refused = 0.0, False, 0

    forget()
    yield
    forget()


@pytest.fixture(autouse=True)
def _empty_presence():
    presence.clear()
    yield
    presence.clear()


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def user(db):
    from accounts.tests.factories import UserFactory

    return UserFactory(username="alice")


@pytest.fixture
def auth_client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_pair_issue(user=user).access_token}")
    return client


@pytest.fixture
def general(db):
    from chat.models import Room

    return Room.objects.get(name="general")


class CapturedLog:
    """What the server's JSON log handler would have written while a test ran."""

    def __init__(self, stream: io.StringIO):
        self._stream = stream

    def text(self) -> str:
        return self._stream.getvalue()

    def lines(self) -> list[dict]:
        return [json.loads(line) for line in self.text().splitlines()]

    def events(self, event: str) -> list[dict]:
        return [line for line in self.lines() if line["event"] == event]


@pytest.fixture
def json_log():
    """Every record logged during the test, formatted at emit time (so with its context) as JSON."""
    from chatproject.logs import JsonFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logging.getLogger().addHandler(handler)
    try:
        yield CapturedLog(stream)
    finally:
        logging.getLogger().removeHandler(handler)
