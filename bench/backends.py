"""The scale-out configuration's services for one benchmark run: a PostgreSQL database and a Redis prefix.

Uses the machine's PostgreSQL (127.0.0.1:5432, trust auth as `postgres` or the current user) and Redis
(127.0.0.1:6379 by default). The database is created for the run and dropped after it; every Redis key
and pub/sub channel of the run carries a prefix of its own (CHAT_REDIS_PREFIX), and its keys are deleted
after it. Redis database 0 by default: the test suites claim 1-15 (tests/conftest.py, integration/).
"""

import contextlib
import getpass
from collections.abc import Iterator

POSTGRES_HOST, POSTGRES_PORT = "127.0.0.1", 5432
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def postgres_admin_url() -> str | None:
    """A URL of the maintenance database that accepts us, or None when PostgreSQL is not reachable."""
    import psycopg

    for user in dict.fromkeys(("postgres", getpass.getuser())):
        url = f"postgres://{user}@{POSTGRES_HOST}:{POSTGRES_PORT}/postgres"
        with contextlib.suppress(psycopg.Error), psycopg.connect(url, connect_timeout=2):
            return url
    return None


def redis_version(url: str) -> str | None:
    """The Redis server's version, or None when it does not answer."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        return client.info("server")["redis_version"]
    except redis.RedisError:
        return None
    finally:
        client.close()


def missing(redis_url: str) -> list[str]:
    """What the scale-out configuration needs and cannot reach (empty: it can run)."""
    absent = []
    if postgres_admin_url() is None:
        absent.append(f"PostgreSQL on {POSTGRES_HOST}:{POSTGRES_PORT} (trust auth as postgres or {getpass.getuser()})")
    if redis_version(redis_url) is None:
        absent.append(f"Redis at {redis_url}")
    return absent


@contextlib.contextmanager
def scale_out_services(redis_url: str, name: str) -> Iterator[dict]:
    """The chat's environment for a fresh database `name` and Redis prefix `name`; both removed afterwards."""
    import psycopg
    import redis
    from psycopg import sql

    admin_url = postgres_admin_url()
    if admin_url is None:
        raise SystemExit(f"PostgreSQL not reachable on {POSTGRES_HOST}:{POSTGRES_PORT}")
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        postgres_version = connection.execute("SHOW server_version").fetchone()[0]
    try:
        yield {
            "env": {
                "DATABASE_URL": f"{admin_url.rsplit('/', 1)[0]}/{name}",
                "REDIS_URL": redis_url,
                "CHAT_REDIS_PREFIX": name,
            },
            "versions": {"postgresql": postgres_version, "redis": redis_version(redis_url)},
        }
    finally:
        with psycopg.connect(admin_url, autocommit=True) as connection:
            connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        client = redis.Redis.from_url(redis_url, socket_timeout=5)
        with contextlib.suppress(redis.RedisError):
            for key in client.scan_iter(match=f"{name}*", count=1000):
                client.delete(key)
        client.close()
