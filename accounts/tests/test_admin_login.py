"""Django admin's login: checked by the login service, in the same counters and limits as POST /token."""

import html
import re

import pytest
from django.test import Client
from rest_framework.test import APIClient

from accounts.forms import wait_in_words
from accounts.tests.factories import DEFAULT_PASSWORD, UserFactory

pytestmark = pytest.mark.django_db

WRONG = "guess-1234"
WRONG_PASSWORD_NOTE = (
    "Please enter the correct username and password for a staff account. Note that both fields may be case-sensitive."
)
# The limiter's clock stands 605 s into a 15-minute window (conftest.py): 295 s are left.
LOCKED_NOTE = "Too many login attempts; try again in 5 minutes."
TOKEN_LOCKED = {"detail": "Too many requests; try again later.", "retry_after": 295}


@pytest.fixture(autouse=True)
def _login_limits(settings):
    settings.LOGIN_FAILURE_RATE = "3/15min"


@pytest.fixture
def root(db):
    return UserFactory(username="root", is_staff=True, is_superuser=True)


def admin_login(username: str, password: str, address: str) -> tuple[int, str | list[str]]:
    """Post the admin's login form: (302, where it sends the browser), or (status, the page's error notes)."""
    response = Client().post(
        "/admin/login/?next=/admin/",
        {"username": username, "password": password, "next": "/admin/"},
        REMOTE_ADDR=address,
    )
    if response.status_code == 302:
        return 302, response["Location"]
    notes = re.findall(r'<p class="errornote">\s*(.*?)\s*</p>', response.content.decode(), re.DOTALL)
    return response.status_code, [html.unescape(note) for note in notes]


def token(username: str, password: str, address: str):
    return APIClient().post("/token", {"username": username, "password": password}, format="json", REMOTE_ADDR=address)


def test_wrong_passwords_past_the_limit_lock_the_admin_login_even_for_the_right_password(root):
    for n in range(3):
        assert admin_login("root", WRONG, f"203.0.113.{n}") == (200, [WRONG_PASSWORD_NOTE])
    assert admin_login("root", WRONG, "203.0.113.50") == (200, [LOCKED_NOTE])
    assert admin_login("root", DEFAULT_PASSWORD, "203.0.113.51") == (200, [LOCKED_NOTE])
    assert admin_login("ROOT", DEFAULT_PASSWORD, "203.0.113.52") == (200, [LOCKED_NOTE])


def test_admin_failures_lock_token_logins(root):
    for n in range(3):
        assert admin_login("root", WRONG, f"203.0.113.{n}") == (200, [WRONG_PASSWORD_NOTE])
    response = token("root", DEFAULT_PASSWORD, "198.51.100.7")
    assert (response.status_code, response.json()) == (429, TOKEN_LOCKED)


def test_token_failures_lock_the_admin_login(root):
    for n in range(3):
        assert token("root", WRONG, f"203.0.113.{n}").status_code == 401
    assert admin_login("root", DEFAULT_PASSWORD, "198.51.100.7") == (200, [LOCKED_NOTE])


def test_failures_on_both_count_in_one_budget(root):
    assert admin_login("root", WRONG, "203.0.113.1") == (200, [WRONG_PASSWORD_NOTE])
    assert token("root", WRONG, "203.0.113.2").status_code == 401
    assert admin_login("root", WRONG, "203.0.113.3") == (200, [WRONG_PASSWORD_NOTE])
    assert admin_login("root", DEFAULT_PASSWORD, "198.51.100.7") == (200, [LOCKED_NOTE])


def test_a_known_address_still_logs_in_to_the_admin(root):
    assert admin_login("root", DEFAULT_PASSWORD, "192.0.2.10") == (302, "/admin/")  # the owner's usual address
    assert token("root", DEFAULT_PASSWORD, "192.0.2.20").status_code == 200  # and their phone
    for n in range(3):
        assert admin_login("root", WRONG, f"203.0.113.{n}") == (200, [WRONG_PASSWORD_NOTE])
    assert admin_login("root", DEFAULT_PASSWORD, "203.0.113.50") == (200, [LOCKED_NOTE])
    assert admin_login("root", DEFAULT_PASSWORD, "192.0.2.10") == (302, "/admin/")
    assert admin_login("root", DEFAULT_PASSWORD, "192.0.2.20") == (302, "/admin/")  # known through /token


def test_a_known_address_is_limited_on_its_own(root):
    assert admin_login("root", DEFAULT_PASSWORD, "192.0.2.10") == (302, "/admin/")
    for _ in range(3):
        assert admin_login("root", WRONG, "192.0.2.10") == (200, [WRONG_PASSWORD_NOTE])
    assert admin_login("root", DEFAULT_PASSWORD, "192.0.2.10") == (200, [LOCKED_NOTE])


def test_a_user_who_is_not_staff_gets_the_admins_refusal_and_their_guesses_count(db):
    UserFactory(username="alice")
    assert admin_login("alice", DEFAULT_PASSWORD, "192.0.2.10") == (200, [WRONG_PASSWORD_NOTE])
    assert token("alice", DEFAULT_PASSWORD, "192.0.2.11").status_code == 200  # the password was right
    for n in range(3):
        assert admin_login("alice", WRONG, f"203.0.113.{n}") == (200, [WRONG_PASSWORD_NOTE])
    assert admin_login("alice", DEFAULT_PASSWORD, "203.0.113.50") == (200, [LOCKED_NOTE])
    assert admin_login("alice", DEFAULT_PASSWORD, "192.0.2.11") == (200, [WRONG_PASSWORD_NOTE])  # known, not staff


def test_admin_logins_count_per_address_with_token_logins(settings, root):
    settings.AUTH_RATE = "2/min"  # the clock stands 5 s into a minute: 55 s are left
    assert admin_login("root", WRONG, "203.0.113.1") == (200, [WRONG_PASSWORD_NOTE])
    assert token("root", WRONG, "203.0.113.1").status_code == 401
    assert admin_login("root", DEFAULT_PASSWORD, "203.0.113.1") == (
        200,
        ["Too many login attempts; try again in 55 seconds."],
    )
    response = token("root", DEFAULT_PASSWORD, "203.0.113.1")
    assert (response.status_code, response.json()) == (
        429,
        {"detail": "Too many requests; try again later.", "retry_after": 55},
    )
    assert admin_login("root", DEFAULT_PASSWORD, "203.0.113.2") == (302, "/admin/")


@pytest.mark.parametrize(
    ("seconds", "words"),
    [(1, "1 second"), (55, "55 seconds"), (60, "1 minute"), (61, "2 minutes"), (295, "5 minutes"), (900, "15 minutes")],
)
def test_wait_in_words(seconds, words):
    assert wait_in_words(seconds) == words
