"""Every setting of the chat server, read from the environment in this one place.

Defaults serve a developer on one machine: SQLite and the in-process channel layer,
plain HTTP on loopback, DEBUG off. DJANGO_ENV=production switches on the hardened
deployment (mandatory secret key, HTTPS-only cookies, HSTS, SSL redirect).
"""

import ipaddress
import math
import os
import secrets
import tempfile
import warnings
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from chatproject.rates import parse_rate
from chatproject.security import static_file_headers

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

_TRUE, _FALSE = {"true", "1", "yes", "y", "on", "ok"}, {"false", "0", "no", "n", "off"}


def _bool(name: str, default: bool) -> bool:
    """A true/false setting (empty: the default); one it cannot read stops the start: django-environ
    would take it as false, and a `# comment` systemd kept in the value would turn a protection off."""
    raw = env.str(name, default="").strip().lower()
    if not raw:
        return default
    if raw not in _TRUE | _FALSE:
        raise ImproperlyConfigured(f"{name} must be true or false (or 1/0, yes/no, on/off), not {raw!r}.")
    return raw in _TRUE


def _int(name: str, default: int, *, minimum: int) -> int:
    """A whole-number setting (empty: the default); anything else, or less than `minimum`, stops the start
    naming the setting: django-environ's message names neither, and some values started a broken server."""
    raw = env.str(name, default="").strip()
    if not raw:
        return default
    digits = raw[1:] if raw[:1] in "+-" else raw
    if not (digits.isascii() and digits.isdigit()):
        raise ImproperlyConfigured(f"{name} must be a whole number, not {raw!r}.")
    if int(raw) < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {raw}.")
    return int(raw)


def _seconds(name: str, default: float) -> float:
    """A number of seconds above 0 (empty: the default), such as 2 or 0.5. django-environ read "500ms" as
    500 and "abc" as an error naming nothing."""
    raw = env.str(name, default="").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0) or not raw.isascii():
        raise ImproperlyConfigured(f"{name} must be a number of seconds above 0 (such as 2 or 0.5), not {raw!r}.")
    return value


def _choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    """One of `choices`, in any letter case (empty: the default)."""
    raw = env.str(name, default="").strip()
    if not raw:
        return default
    if raw.lower() not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}, not {raw!r}.")
    return raw.lower()


# Only these two: a misspelt "prod" or a kept "# comment" silently ran production without its hardening.
PRODUCTION = _choice("DJANGO_ENV", "development", ("development", "production")) == "production"
DEBUG = _bool("DJANGO_DEBUG", default=False)


def _secret_key() -> str:
    """Return the configured key; outside production, one generated once and kept on disk."""
    key = env.str("DJANGO_SECRET_KEY", default="")
    if key:
        return key
    if PRODUCTION:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when DJANGO_ENV=production.")
    key_file = Path(env.str("DJANGO_SECRET_KEY_FILE", default=str(BASE_DIR / ".secret_key")))
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])

INSTALLED_APPS = [
    "daphne",  # first, so that `runserver` serves ASGI (HTTP and WebSocket)
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "accounts",
    "chat",
]

MIDDLEWARE = [
    "chatproject.middleware.RequestLogMiddleware",  # first: its request id and timing cover everything
    "chatproject.errors.JsonErrorMiddleware",  # before the rest: it sees every error response they make
    "chatproject.security.ContentSecurityPolicyMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "chatproject.urls"
ASGI_APPLICATION = "chatproject.asgi.application"
AUTH_USER_MODEL = "accounts.User"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


# --- Database -------------------------------------------------------------------------------
def _database(default: str) -> dict:
    """DATABASE_URL read: SQLite or PostgreSQL, or a stop naming the setting (not its password)."""
    url = env.str("DATABASE_URL", default="").strip() or default
    scheme = url.split("://", 1)[0] if "://" in url else ""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # django-environ warns of an unknown scheme, then fails on it
        try:
            config = environ.Env.db_url_config(url) if scheme else {}
        except Exception:
            config = {}
    if config.get("ENGINE") not in _DATABASE_ENGINES:
        raise ImproperlyConfigured(
            "DATABASE_URL must be sqlite:///<absolute path> or postgres://<user>:<password>@<host>:<port>/<name>, "
            f"not a URL of scheme {scheme!r}."
        )
    return config


_DATABASE_ENGINES = (
    "django.db.backends.sqlite3",
    "django.db.backends.postgresql",
    "django.db.backends.postgresql_psycopg2",
)
DATABASES = {"default": _database(f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
_db = DATABASES["default"]
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # Concurrent writers must queue, not fail with "database is locked": WAL lets readers run
    # beside the writer, IMMEDIATE takes the write lock at BEGIN (a deferred transaction that
    # upgrades from read to write cannot wait on the busy timeout), and the timeout lets them wait.
    _db.setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
    # A connection lives as long as its thread: the HTTP request threads, the writer and the
    # consumers' database thread each keep one (opening one cost as much as a page of history).
    _db["CONN_MAX_AGE"] = None
    # Tests use a file too, so they meet the same locking as production; one per test run.
    _db.setdefault("TEST", {})["NAME"] = str(Path(tempfile.gettempdir()) / f"chat-test-{os.getpid()}.sqlite3")
elif _db["ENGINE"] in ("django.db.backends.postgresql", "django.db.backends.postgresql_psycopg2"):
    _db["ENGINE"] = "django.db.backends.postgresql"
    # Under ASGI every request may run in a new thread, so persistent connections leak;
    # psycopg's pool hands connections out and takes them back instead.
    _db["CONN_MAX_AGE"] = 0
    _db["CONN_HEALTH_CHECKS"] = True
    _db.setdefault("OPTIONS", {})["pool"] = {
        "min_size": _int("DATABASE_POOL_MIN", 2, minimum=0),
        "max_size": _int("DATABASE_POOL_MAX", 10, minimum=1),
        "timeout": _seconds("DATABASE_POOL_TIMEOUT", 10.0),
        # psycopg retries a failed connection with doubling waits for as long as this (5 minutes by
        # default): after a long outage the next try could be half a minute after the database was
        # back. Given up after 5 s, the next request that needs a connection starts a fresh try at once.
        "reconnect_timeout": 5.0,
    }
    if _db["OPTIONS"]["pool"]["max_size"] < _db["OPTIONS"]["pool"]["min_size"]:
        raise ImproperlyConfigured("DATABASE_POOL_MAX must be at least DATABASE_POOL_MIN.")

# Threads that run HTTP requests (middleware and view), started as requests need them and kept;
# each keeps its SQLite connection (chatproject/handler.py).
HTTP_THREADS = _int("HTTP_THREADS", 32, minimum=1)
# A plain GET /messages/<room> is answered below Django's request handling, on the same threads
# (chat/fast_history.py); off, Django answers it like every other request.
HISTORY_FAST_PATH = _bool("HISTORY_FAST_PATH", default=True)
# Requests that may wait long for a password hashing slot: each on a thread of its own, as Django
# runs every request, so that a burst of logins never holds the threads the rest of the API needs.
HTTP_OWN_THREAD_PATHS = ("/token", "/register", "/admin/login/")

# --- Channel layer and cache ----------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
# Keys, channels and groups of one deployment; two deployments may share a Redis database.
CHAT_REDIS_PREFIX = env.str("CHAT_REDIS_PREFIX", default="chat")
# A socket's presence entry lives this long without a heartbeat (heartbeats every third of it),
# so the users of a node killed with -9 drop out within TTL + TTL/3.
CHAT_PRESENCE_TTL_SECONDS = _int("CHAT_PRESENCE_TTL_SECONDS", 45, minimum=3)  # 0 heartbeat in a busy loop
# How long a call to Redis (cache and presence) may wait for a connection or an answer, set here
# rather than left to the client library's default (none before redis-py 8). The cache counts rate
# limits on the writer's thread while it holds the rooms' locks: a Redis that hangs, rather than
# refusing, holds the sends of one batch until then; past it, limits fail open and leave the cache
# alone for a few seconds (chatproject.ratelimit.CACHE_PAUSE_SECONDS), so the next batches do not wait.
# (0 would make every call fail at once: limits silently always open.)
REDIS_TIMEOUT_SECONDS = _seconds("REDIS_TIMEOUT_SECONDS", 2.0)
if REDIS_URL:
    # Pub/sub: one PUBLISH per group send, fanned out inside each node, and consumers survive a
    # Redis restart (see README, "Several nodes"). Lost publishes are healed from the database.
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            # Bounded like every other Redis call: a publish to a Redis that stopped answering (a
            # network partition, not a refused connection) would otherwise wait for TCP to give up.
            "CONFIG": {
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "socket_timeout": REDIS_TIMEOUT_SECONDS,
                        "socket_connect_timeout": REDIS_TIMEOUT_SECONDS,
                    }
                ],
                "prefix": f"{CHAT_REDIS_PREFIX}:asgi",
            },
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "chatproject.cache.RedisCache",  # one connection pool per process
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": CHAT_REDIS_PREFIX,
            "OPTIONS": {"socket_timeout": REDIS_TIMEOUT_SECONDS, "socket_connect_timeout": REDIS_TIMEOUT_SECONDS},
        }
    }
else:
    # Room fan-out puts one message per member on each member's queue: the stock capacity of 100
    # drops deliveries under load (healed from the database only at the next message or a resume),
    # and the stock one-day group expiry would silently unsubscribe a socket open for a day.
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "chat.layers.InProcessChannelLayer",
            "CONFIG": {"capacity": 10_000, "group_expiry": 10 * 365 * 24 * 3600},
        }
    }
    CACHES = {"default": {"BACKEND": "chatproject.cache.LocalCache"}}

# --- Auth -----------------------------------------------------------------------------------
AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.ModelBackend"]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Passwords hashed at once per process, by /token and /register (0: no limit). A PBKDF2 hash keeps a
# core busy for ~0.4 s; leaving one core to the event loop keeps the chat moving during a burst of logins.
PASSWORD_HASH_CONCURRENCY = _int("PASSWORD_HASH_CONCURRENCY", max(1, (os.cpu_count() or 1) - 1), minimum=0)

ACCESS_TOKEN_SECONDS = _int("ACCESS_TOKEN_SECONDS", 1800, minimum=1)
REFRESH_TOKEN_DAYS = _int("REFRESH_TOKEN_DAYS", 7, minimum=1)

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(seconds=ACCESS_TOKEN_SECONDS),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=REFRESH_TOKEN_DAYS),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": False,
    "ALGORITHM": "HS256",
    "SIGNING_KEY": SECRET_KEY,
    "AUTH_HEADER_TYPES": ("Bearer",),
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["accounts.authentication.BearerAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "chatproject.parsers.JSONParser",  # 400, not 500, for JSON nested too deeply
        "chatproject.parsers.FormParser",  # 400, not replacement characters, for a body that is not text
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "chatproject.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Chat API",
    "DESCRIPTION": "Accounts, rooms and messages of the chat server. "
    "Real-time delivery is on the WebSocket endpoint /ws/{room} (see README).",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # The health fields share one choice set; one enum name keeps `check --deploy` free of W001.
    "ENUM_NAME_OVERRIDES": {
        "HealthStateEnum": ["ok", "unavailable"],
        "ForbiddenMessageCodeEnum": ["muted", "archived"],
    },
    # The schema and its docs are public: a client's stale Bearer header must not make them 401.
    "SERVE_AUTHENTICATION": [],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "chatproject.schema.add_unsupported_media_type",
    ],
}

# --- Chat -----------------------------------------------------------------------------------
CHAT_MAX_MESSAGE_LENGTH = _int("CHAT_MAX_MESSAGE_LENGTH", 4000, minimum=1)
CHAT_MAX_FRAME_BYTES = 64 * 1024
# The most missed messages a socket resuming with since= is sent; a client further behind pages the rest.
CHAT_REPLAY_LIMIT = _int("CHAT_REPLAY_LIMIT", 1000, minimum=1)
# How often each server process checks whether users of its open sockets were banned, in case the
# ban's broadcast did not reach it (chat/deactivation.py). With the in-process layer a command's ban
# (ban_user, run in a process of its own) reaches no server but through this check: every second, so
# its sockets still close within 2 s (a check of 5,000 users costs about 15 ms on SQLite).
CHAT_DEACTIVATION_CHECK_SECONDS = _seconds("CHAT_DEACTIVATION_CHECK_SECONDS", 10.0 if REDIS_URL else 1.0)


# --- Abuse limits (README, "Security") -------------------------------------------------------
def _rate(name: str, default: str) -> str:
    """The rate setting `name`, checked now: a bad one would fail every request that counts against it."""
    text = env.str(name, default=default)
    parse_rate(text, name=name)
    return text


AUTH_RATE = _rate("AUTH_RATE", "10/min")  # /register and logins (/token, the admin's), each, per client IP
LOGIN_FAILURE_RATE = _rate("LOGIN_FAILURE_RATE", "10/15min")  # failed logins per username, /token and admin
CHAT_MESSAGE_RATE = _rate("CHAT_MESSAGE_RATE", "20/10s")  # sends per user, every transport
WS_TICKET_RATE = _rate("WS_TICKET_RATE", "60/min")  # POST /ws-ticket per user
# POST /rooms per user, on top of CHAT_MESSAGE_RATE; off by default, the protocol's only write limit
# being CHAT_MESSAGE_RATE.
ROOM_CREATE_RATE = _rate("ROOM_CREATE_RATE", "0")
CHAT_MAX_CONNECTIONS_PER_USER = _int("CHAT_MAX_CONNECTIONS_PER_USER", 20, minimum=0)  # 0: unlimited
# Addresses (or networks) of proxies whose X-Forwarded-For is believed; empty: the socket's peer is the client.
TRUSTED_PROXIES = [entry.strip() for entry in env.list("TRUSTED_PROXIES", default=[]) if entry.strip()]
for _proxy in TRUSTED_PROXIES:
    try:
        ipaddress.ip_network(_proxy, strict=False)
    except ValueError:  # ignored, every client behind the proxy would share the proxy's rate limits
        raise ImproperlyConfigured(
            f"TRUSTED_PROXIES must list addresses or networks (10.0.0.5, 10.0.0.0/8), not {_proxy!r}."
        ) from None
WS_TICKET_SECONDS = 30

# --- i18n, static ---------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = Path(env.str("DJANGO_STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
STATICFILES_DIRS = [BASE_DIR / "static"]
# Outside production the app serves static files straight from the source folders.
WHITENOISE_USE_FINDERS = not PRODUCTION
WHITENOISE_AUTOREFRESH = DEBUG
WHITENOISE_ADD_HEADERS_FUNCTION = static_file_headers
if not PRODUCTION:
    # STATIC_ROOT only exists after `collectstatic`, which only the production path runs.
    warnings.filterwarnings("ignore", message="No directory at")
# WhiteNoise answers with a file's synchronous iterator, which Django's ASGI handler reads on a thread:
# as intended here (small hashed files, cached by browsers and the proxy), not a fault to log once per process.
warnings.filterwarnings("ignore", message="StreamingHttpResponse must consume synchronous iterators")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# --- Security -------------------------------------------------------------------------------
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
if PRODUCTION:
    if "*" in ALLOWED_HOSTS:
        # Any Host header would be believed: in absolute URLs, CSRF origins and the WebSocket origin check.
        raise ImproperlyConfigured('DJANGO_ALLOWED_HOSTS must name the hosts served, not "*", in production.')
    # TLS ends at the proxy, which must overwrite this header; nodes must be reachable only through it.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = _bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
    # Load balancers probe each node over plain HTTP.
    SECURE_REDIRECT_EXEMPT = [r"^healthz/?$"]
    SECURE_HSTS_SECONDS = _int("DJANGO_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True


def _trusted_origin(value: str) -> str:
    """An origin as written (with its scheme), or a host served over HTTPS: ".example.com" means the
    domain and its subdomains, "https://*.example.com", as in ALLOWED_HOSTS."""
    if "://" in value:
        return value
    return f"https://*{value}" if value.startswith(".") else f"https://{value}"


# In every environment; by default, in production, each allowed host over HTTPS.
CSRF_TRUSTED_ORIGINS = [
    _trusted_origin(value)
    for value in env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=ALLOWED_HOSTS if PRODUCTION else [])
]

# --- Logging --------------------------------------------------------------------------------
# One JSON object per line on stderr (LOG_FORMAT=plain for people at a terminal), every string
# redacted of tokens (chatproject/logs.py). The launchers (chatproject/serve_uvicorn.py, and
# chatproject/serve.py for daphne's access log) send the server's own lines through here too.
LOG_LEVEL = _choice("LOG_LEVEL", "info", ("debug", "info", "warning", "error", "critical")).upper()
LOG_FORMAT = _choice("LOG_FORMAT", "json", ("json", "plain"))
LOGGING_CONFIG = "chatproject.logs.configure_logging"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "chatproject.logs.JsonFormatter"},
        "plain": {"()": "chatproject.logs.PlainFormatter"},
    },
    "filters": {
        "redis_reconnect": {"()": "chatproject.logs.RedisReconnectIsWarning"},
        "client_mistake": {"()": "chatproject.logs.ClientMistakeIsWarning"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain" if LOG_FORMAT == "plain" else "json",
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Django's defaults give these loggers handlers of their own (plain text): send them to root.
        "django": {"handlers": [], "level": "NOTSET"},
        "django.server": {"handlers": [], "level": "NOTSET", "propagate": True},
        # chat.http logs every request; 4xx warnings from Django would say it twice.
        "django.request": {"level": "ERROR"},
        "django.channels.server": {"level": "WARNING"},
        "channels_redis.pubsub": {"filters": ["redis_reconnect"]},
        # Requests Django refuses with a 400 as suspicious: the client's doing (README, "Logging").
        **{
            f"django.security.{name}": {"filters": ["client_mistake"]}
            for name in ("DisallowedHost", "RequestDataTooBig", "TooManyFieldsSent", "TooManyFilesSent")
        },
    },
}
