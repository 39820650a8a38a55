"""chatproject.settings: SQLite tuned for concurrent writers, and every setting read from the environment.

Settings are read once at import, so each environment is checked in a fresh `python -c` process.
"""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from chat.tests.databases import on_sqlite

BASE_DIR = Path(__file__).resolve().parents[2]

SHOW_SETTINGS = """
import json
from django.conf import settings as s
print(json.dumps({
    "PRODUCTION": s.PRODUCTION,
    "HTTP_THREADS": s.HTTP_THREADS,
    "REDIS_TIMEOUT_SECONDS": s.REDIS_TIMEOUT_SECONDS,
    "LOG_LEVEL": s.LOG_LEVEL,
    "TRUSTED_PROXIES": s.TRUSTED_PROXIES,
    "DEBUG": s.DEBUG,
    "SECRET_KEY": s.SECRET_KEY,
    "ALLOWED_HOSTS": s.ALLOWED_HOSTS,
    "DATABASE": s.DATABASES["default"],
    "CHANNEL_LAYERS": s.CHANNEL_LAYERS,
    "ACCESS_TOKEN_LIFETIME": s.SIMPLE_JWT["ACCESS_TOKEN_LIFETIME"].total_seconds(),
    "REFRESH_TOKEN_LIFETIME": s.SIMPLE_JWT["REFRESH_TOKEN_LIFETIME"].total_seconds(),
    "SIGNING_KEY_IS_SECRET_KEY": s.SIMPLE_JWT["SIGNING_KEY"] == s.SECRET_KEY,
    "CHAT_MAX_MESSAGE_LENGTH": s.CHAT_MAX_MESSAGE_LENGTH,
    "CHAT_REPLAY_LIMIT": s.CHAT_REPLAY_LIMIT,
    "CHAT_DEACTIVATION_CHECK_SECONDS": s.CHAT_DEACTIVATION_CHECK_SECONDS,
    "AUTH_RATE": s.AUTH_RATE,
    "LOGIN_FAILURE_RATE": s.LOGIN_FAILURE_RATE,
    "CHAT_MESSAGE_RATE": s.CHAT_MESSAGE_RATE,
    "WS_TICKET_RATE": s.WS_TICKET_RATE,
    "ROOM_CREATE_RATE": s.ROOM_CREATE_RATE,
    "CACHES": s.CACHES,
    "SECURE_SSL_REDIRECT": s.SECURE_SSL_REDIRECT,
    "SECURE_HSTS_SECONDS": s.SECURE_HSTS_SECONDS,
    "SESSION_COOKIE_SECURE": s.SESSION_COOKIE_SECURE,
    "CSRF_COOKIE_SECURE": s.CSRF_COOKIE_SECURE,
}, default=str))
"""


def run_settings(env: dict[str, str]) -> subprocess.CompletedProcess:
    """Import the settings in a new process that sees only `env` (plus PATH)."""
    return subprocess.run(
        [sys.executable, "-c", SHOW_SETTINGS],
        cwd=BASE_DIR,
        env={"PATH": os.environ.get("PATH", ""), "DJANGO_SETTINGS_MODULE": "chatproject.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def load_settings(env: dict[str, str]) -> dict:
    result = run_settings(env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def key_file(tmp_path) -> Path:
    return tmp_path / "secret_key"


@pytest.fixture
def dev_env(key_file) -> dict[str, str]:
    """No configuration at all, except that the generated key goes to a temporary file."""
    return {"DJANGO_SECRET_KEY_FILE": str(key_file)}


# --- SQLite for concurrent writers ----------------------------------------------------------


@on_sqlite
def test_sqlite_options_take_concurrent_writers():
    database = settings.DATABASES["default"]

    assert database["ENGINE"] == "django.db.backends.sqlite3"
    assert database["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
    assert database["OPTIONS"]["timeout"] >= 5
    assert "PRAGMA journal_mode=WAL" in database["OPTIONS"]["init_command"]


@on_sqlite
@pytest.mark.django_db
def test_sqlite_connection_runs_in_wal_mode_with_a_busy_timeout():
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        journal_mode = cursor.fetchone()[0]
        cursor.execute("PRAGMA busy_timeout")
        busy_timeout = cursor.fetchone()[0]

    assert journal_mode == "wal"
    assert busy_timeout == settings.DATABASES["default"]["OPTIONS"]["timeout"] * 1000


@on_sqlite
@pytest.mark.django_db
def test_tests_use_a_file_database_so_threads_share_it():
    name = str(connection.settings_dict["NAME"])

    assert ":memory:" not in name and "mode=memory" not in name
    assert Path(name).is_file()


# --- Secret key, DEBUG, hosts ---------------------------------------------------------------


def test_production_without_secret_key_refuses_to_start(key_file):
    result = run_settings({"DJANGO_ENV": "production", "DJANGO_SECRET_KEY_FILE": str(key_file)})

    assert result.returncode != 0
    assert "django.core.exceptions.ImproperlyConfigured: DJANGO_SECRET_KEY must be set" in result.stderr
    assert not key_file.exists()


def test_production_with_secret_key_is_hardened(key_file):
    loaded = load_settings(
        {
            "DJANGO_ENV": "production",
            "DJANGO_SECRET_KEY": "prod-key-" + "x" * 50,
            "DJANGO_SECRET_KEY_FILE": str(key_file),
        }
    )

    assert loaded["PRODUCTION"] is True
    assert loaded["SECRET_KEY"] == "prod-key-" + "x" * 50
    assert loaded["SIGNING_KEY_IS_SECRET_KEY"] is True
    assert loaded["DEBUG"] is False
    assert loaded["SECURE_SSL_REDIRECT"] is True
    assert loaded["SECURE_HSTS_SECONDS"] == 31536000
    assert (loaded["SESSION_COOKIE_SECURE"], loaded["CSRF_COOKIE_SECURE"]) == (True, True)
    assert not key_file.exists()


def test_no_environment_means_plain_http_debug_off_and_a_generated_key(dev_env, key_file):
    loaded = load_settings(dev_env)

    assert loaded["PRODUCTION"] is False
    assert loaded["DEBUG"] is False
    assert loaded["SECURE_SSL_REDIRECT"] is False
    assert loaded["SECURE_HSTS_SECONDS"] == 0
    assert (loaded["SESSION_COOKIE_SECURE"], loaded["CSRF_COOKIE_SECURE"]) == (False, False)
    assert loaded["ALLOWED_HOSTS"] == ["localhost", "127.0.0.1", "[::1]"]
    assert key_file.read_text().strip() == loaded["SECRET_KEY"]
    assert len(loaded["SECRET_KEY"]) >= 50
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_generated_key_is_kept_across_restarts(dev_env, key_file):
    first = load_settings(dev_env)["SECRET_KEY"]
    written = key_file.read_text()

    second = load_settings(dev_env)["SECRET_KEY"]

    assert second == first
    assert key_file.read_text() == written


def test_generated_keys_differ_between_machines(tmp_path):
    one = load_settings({"DJANGO_SECRET_KEY_FILE": str(tmp_path / "one")})["SECRET_KEY"]
    two = load_settings({"DJANGO_SECRET_KEY_FILE": str(tmp_path / "two")})["SECRET_KEY"]

    assert one != two


def test_existing_key_file_is_used(dev_env, key_file):
    key_file.write_text("kept-key-from-an-earlier-run\n")

    assert load_settings(dev_env)["SECRET_KEY"] == "kept-key-from-an-earlier-run"


def test_secret_key_from_environment_wins_outside_production(dev_env, key_file):
    loaded = load_settings({**dev_env, "DJANGO_SECRET_KEY": "env-key"})

    assert loaded["SECRET_KEY"] == "env-key"
    assert not key_file.exists()


@pytest.mark.parametrize(("value", "debug"), [("1", True), ("true", True), ("on", True), ("0", False), ("", False)])
def test_debug_is_read_and_does_not_switch_production(dev_env, value, debug):
    loaded = load_settings({**dev_env, "DJANGO_DEBUG": value})

    assert loaded["DEBUG"] is debug
    assert loaded["PRODUCTION"] is False
    assert loaded["SECURE_SSL_REDIRECT"] is False


@pytest.mark.parametrize(
    "name", ["DJANGO_SECURE_SSL_REDIRECT", "DJANGO_DEBUG", "HISTORY_FAST_PATH"], ids=["redirect", "debug", "fast-path"]
)
@pytest.mark.parametrize("value", ["true    # keep it: turning it off fails `check --deploy`", "yes please", "2"])
def test_a_true_false_setting_that_cannot_be_read_stops_the_start(key_file, name, value):
    # systemd's EnvironmentFile= keeps a comment after a value; read as false, it turned the redirect off.
    result = run_settings({"DJANGO_ENV": "production", "DJANGO_SECRET_KEY": "k" * 50, name: value})

    assert result.returncode != 0
    assert f"django.core.exceptions.ImproperlyConfigured: {name} must be true or false" in result.stderr


@pytest.mark.parametrize(("value", "redirect"), [("on", True), ("FALSE", False), ("", True)])
def test_the_https_redirect_reads_the_usual_words_and_an_empty_value_is_the_default(key_file, value, redirect):
    loaded = load_settings(
        {"DJANGO_ENV": "production", "DJANGO_SECRET_KEY": "k" * 50, "DJANGO_SECURE_SSL_REDIRECT": value}
    )
    assert loaded["SECURE_SSL_REDIRECT"] is redirect


def test_allowed_hosts_are_read(dev_env):
    loaded = load_settings({**dev_env, "DJANGO_ALLOWED_HOSTS": "chat.example.com,10.0.0.5"})

    assert loaded["ALLOWED_HOSTS"] == ["chat.example.com", "10.0.0.5"]


# --- Database -------------------------------------------------------------------------------


def test_database_defaults_to_sqlite_next_to_the_code(dev_env):
    database = load_settings(dev_env)["DATABASE"]

    assert database["ENGINE"] == "django.db.backends.sqlite3"
    assert database["NAME"] == str(BASE_DIR / "db.sqlite3")
    assert database["OPTIONS"] == {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }


def test_database_url_postgres_uses_a_connection_pool(dev_env):
    database = load_settings({**dev_env, "DATABASE_URL": "postgres://user@127.0.0.1:5432/db"})["DATABASE"]

    assert database["ENGINE"] == "django.db.backends.postgresql"
    assert (database["NAME"], database["USER"], database["HOST"], int(database["PORT"])) == (
        "db",
        "user",
        "127.0.0.1",
        5432,
    )
    assert database["CONN_MAX_AGE"] == 0
    assert database["CONN_HEALTH_CHECKS"] is True
    assert database["OPTIONS"] == {"pool": {"min_size": 2, "max_size": 10, "timeout": 10.0, "reconnect_timeout": 5.0}}


def test_database_pool_size_is_read(dev_env):
    env = {
        **dev_env,
        "DATABASE_URL": "postgresql://user:pw@db.internal:6543/chat",
        "DATABASE_POOL_MIN": "1",
        "DATABASE_POOL_MAX": "4",
        "DATABASE_POOL_TIMEOUT": "2.5",
    }

    database = load_settings(env)["DATABASE"]

    assert (database["HOST"], int(database["PORT"]), database["PASSWORD"]) == ("db.internal", 6543, "pw")
    assert database["OPTIONS"] == {"pool": {"min_size": 1, "max_size": 4, "timeout": 2.5, "reconnect_timeout": 5.0}}


# --- Tokens, chat, channel layer ------------------------------------------------------------


def test_token_lifetimes_and_message_length_defaults(dev_env):
    loaded = load_settings(dev_env)

    assert loaded["ACCESS_TOKEN_LIFETIME"] == 1800
    assert loaded["REFRESH_TOKEN_LIFETIME"] == 7 * 24 * 3600
    assert loaded["CHAT_MAX_MESSAGE_LENGTH"] == 4000
    assert loaded["CHAT_REPLAY_LIMIT"] == 1000


def test_token_lifetimes_and_message_length_are_read(dev_env):
    env = {**dev_env, "ACCESS_TOKEN_SECONDS": "60", "REFRESH_TOKEN_DAYS": "2", "CHAT_MAX_MESSAGE_LENGTH": "500"}

    loaded = load_settings(env)

    assert loaded["ACCESS_TOKEN_LIFETIME"] == 60
    assert loaded["REFRESH_TOKEN_LIFETIME"] == 2 * 24 * 3600
    assert loaded["CHAT_MAX_MESSAGE_LENGTH"] == 500


def test_the_replay_limit_is_read_and_must_be_at_least_one(dev_env):
    assert load_settings({**dev_env, "CHAT_REPLAY_LIMIT": "25"})["CHAT_REPLAY_LIMIT"] == 25

    for value in ("0", "-5"):
        refused = run_settings({**dev_env, "CHAT_REPLAY_LIMIT": value})
        assert refused.returncode != 0
        assert f"ImproperlyConfigured: CHAT_REPLAY_LIMIT must be at least 1, not {value}." in refused.stderr


SECONDS = "a number of seconds above 0 (such as 2 or 0.5)"
POSTGRES = {"DATABASE_URL": "postgres://chat@127.0.0.1:5432/chat"}
BAD_SETTINGS = [
    ({"HTTP_THREADS": "abc"}, "HTTP_THREADS must be a whole number, not 'abc'."),
    ({"HTTP_THREADS": "0"}, "HTTP_THREADS must be at least 1, not 0."),
    ({"ACCESS_TOKEN_SECONDS": "1.5"}, "ACCESS_TOKEN_SECONDS must be a whole number, not '1.5'."),
    ({"ACCESS_TOKEN_SECONDS": "-5"}, "ACCESS_TOKEN_SECONDS must be at least 1, not -5."),
    ({"REFRESH_TOKEN_DAYS": "0"}, "REFRESH_TOKEN_DAYS must be at least 1, not 0."),
    ({"PASSWORD_HASH_CONCURRENCY": "-1"}, "PASSWORD_HASH_CONCURRENCY must be at least 0, not -1."),
    ({"CHAT_PRESENCE_TTL_SECONDS": "0"}, "CHAT_PRESENCE_TTL_SECONDS must be at least 3, not 0."),
    ({"CHAT_MAX_MESSAGE_LENGTH": "0"}, "CHAT_MAX_MESSAGE_LENGTH must be at least 1, not 0."),
    ({"CHAT_MAX_CONNECTIONS_PER_USER": "-1"}, "CHAT_MAX_CONNECTIONS_PER_USER must be at least 0, not -1."),
    ({"CHAT_MAX_CONNECTIONS_PER_USER": "２０"}, "CHAT_MAX_CONNECTIONS_PER_USER must be a whole number, not '２０'."),
    ({"REDIS_TIMEOUT_SECONDS": "500ms"}, f"REDIS_TIMEOUT_SECONDS must be {SECONDS}, not '500ms'."),
    ({"REDIS_TIMEOUT_SECONDS": "0"}, f"REDIS_TIMEOUT_SECONDS must be {SECONDS}, not '0'."),
    ({"REDIS_TIMEOUT_SECONDS": "inf"}, f"REDIS_TIMEOUT_SECONDS must be {SECONDS}, not 'inf'."),
    ({"CHAT_DEACTIVATION_CHECK_SECONDS": "1,5"}, f"CHAT_DEACTIVATION_CHECK_SECONDS must be {SECONDS}, not '1,5'."),
    ({"DJANGO_ENV": "prod"}, "DJANGO_ENV must be one of development, production, not 'prod'."),
    ({"DJANGO_ENV": "production  # on"}, "DJANGO_ENV must be one of development, production, not 'production  # on'."),
    ({"LOG_LEVEL": "verbose"}, "LOG_LEVEL must be one of debug, info, warning, error, critical, not 'verbose'."),
    ({"LOG_FORMAT": "xml"}, "LOG_FORMAT must be one of json, plain, not 'xml'."),
    (
        {"TRUSTED_PROXIES": "10.0.0.0/8,127.0.0.l"},
        "TRUSTED_PROXIES must list addresses or networks (10.0.0.5, 10.0.0.0/8), not '127.0.0.l'.",
    ),
    (
        {"TRUSTED_PROXIES": "127.0.0.1/33"},
        "TRUSTED_PROXIES must list addresses or networks (10.0.0.5, 10.0.0.0/8), not '127.0.0.1/33'.",
    ),
    (
        {"DATABASE_URL": "postgres//chat:secret@db/chat"},
        "DATABASE_URL must be sqlite:///<absolute path> or postgres://<user>:<password>@<host>:<port>/<name>, "
        "not a URL of scheme ''.",
    ),
    (
        {"DATABASE_URL": "mysql://chat:secret@db/chat"},
        "DATABASE_URL must be sqlite:///<absolute path> or postgres://<user>:<password>@<host>:<port>/<name>, "
        "not a URL of scheme 'mysql'.",
    ),
    ({**POSTGRES, "DATABASE_POOL_MAX": "0"}, "DATABASE_POOL_MAX must be at least 1, not 0."),
    (
        {**POSTGRES, "DATABASE_POOL_MIN": "20", "DATABASE_POOL_MAX": "5"},
        "DATABASE_POOL_MAX must be at least DATABASE_POOL_MIN.",
    ),
    ({**POSTGRES, "DATABASE_POOL_TIMEOUT": "-1"}, f"DATABASE_POOL_TIMEOUT must be {SECONDS}, not '-1'."),
]


@pytest.mark.parametrize(
    ("env", "message"), BAD_SETTINGS, ids=[", ".join(env) + "=" + "|".join(env.values()) for env, _ in BAD_SETTINGS]
)
def test_a_setting_that_would_start_a_broken_server_stops_the_start_naming_it(dev_env, env, message):
    refused = run_settings({**dev_env, **env})

    assert refused.returncode != 0
    [error] = [line for line in refused.stderr.splitlines() if line.startswith("django.core.exceptions.")]
    assert error == f"django.core.exceptions.ImproperlyConfigured: {message}"
    assert "secret" not in refused.stderr.replace("DJANGO_SECRET", "")  # a database password is not printed


def test_settings_are_read_in_any_case_and_around_spaces(dev_env):
    env = {
        "DJANGO_ENV": " Development ",
        "HTTP_THREADS": " 4 ",
        "REDIS_TIMEOUT_SECONDS": "0.5",
        "LOG_LEVEL": "warning",
        "TRUSTED_PROXIES": "10.0.0.5, 10.0.0.0/8,",
    }
    loaded = load_settings({**dev_env, **env})
    names = ("PRODUCTION", "HTTP_THREADS", "REDIS_TIMEOUT_SECONDS", "LOG_LEVEL", "TRUSTED_PROXIES")
    assert [loaded[name] for name in names] == [False, 4, 0.5, "WARNING", ["10.0.0.5", "10.0.0.0/8"]]


RATE_SETTINGS = ["AUTH_RATE", "LOGIN_FAILURE_RATE", "CHAT_MESSAGE_RATE", "WS_TICKET_RATE", "ROOM_CREATE_RATE"]
RATE_FORMAT = "<count>/<period>, the period s, min or h with an optional number in front (10/min, 20/10s, 1000/h), or 0"


@pytest.mark.parametrize("name", RATE_SETTINGS)
@pytest.mark.parametrize("value", ["10/week", "abc", "", "10", "10/0s", "-1/min"])
def test_a_malformed_rate_refuses_to_start_naming_the_setting_and_the_format(dev_env, name, value):
    refused = run_settings({**dev_env, name: value})

    assert refused.returncode != 0
    [error] = [line for line in refused.stderr.splitlines() if line.startswith("django.core.exceptions.")]
    assert error.startswith(f"django.core.exceptions.ImproperlyConfigured: Bad {name} {value!r}: ")
    assert error.endswith(f"use {RATE_FORMAT}.")


@pytest.mark.parametrize("name", RATE_SETTINGS)
@pytest.mark.parametrize("value", ["10/min", "20/10s", "1000/h", " 5 / 2min ", "0", "0/s"])
def test_a_well_formed_rate_is_read_as_written(dev_env, name, value):
    assert load_settings({**dev_env, name: value})[name] == value


def test_channel_layer_is_in_process_by_default(dev_env):
    assert load_settings(dev_env)["CHANNEL_LAYERS"] == {
        "default": {
            "BACKEND": "chat.layers.InProcessChannelLayer",
            "CONFIG": {"capacity": 10_000, "group_expiry": 10 * 365 * 24 * 3600},
        }
    }


def test_redis_url_selects_the_redis_pubsub_channel_layer_under_the_prefix(dev_env):
    layers = load_settings({**dev_env, "REDIS_URL": "redis://127.0.0.1:6379/0", "CHAT_REDIS_PREFIX": "blue"})[
        "CHANNEL_LAYERS"
    ]

    assert layers == {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {
                "hosts": [
                    {"address": "redis://127.0.0.1:6379/0", "socket_timeout": 2.0, "socket_connect_timeout": 2.0}
                ],
                "prefix": "blue:asgi",
            },
        }
    }


def test_the_deactivation_check_runs_every_second_where_a_commands_ban_reaches_no_socket(dev_env):
    # The in-process layer: a ban from `ban_user` is found by this check alone and must close within 2 s.
    assert load_settings(dev_env)["CHAT_DEACTIVATION_CHECK_SECONDS"] == 1.0
    with_redis = load_settings({**dev_env, "REDIS_URL": "redis://127.0.0.1:6379/0"})
    assert with_redis["CHAT_DEACTIVATION_CHECK_SECONDS"] == 10.0
    chosen = load_settings({**dev_env, "CHAT_DEACTIVATION_CHECK_SECONDS": "3"})
    assert chosen["CHAT_DEACTIVATION_CHECK_SECONDS"] == 3.0


def test_rates_default_to_the_documented_ones(dev_env):
    loaded = load_settings(dev_env)

    assert [loaded[name] for name in RATE_SETTINGS] == ["10/min", "10/15min", "20/10s", "60/min", "0"]
