"""The schemathesis run of tests/test_schemathesis.py, against a server on PostgreSQL and Redis.

PostgreSQL refuses what SQLite stores without a word (a NUL in a text, a number past BIGINT), and the
rate limits, presence and cache go through Redis: the same generated requests, valid and invalid, must
get documented answers there too, never a server error.
"""

import pytest

from integration.backends import SHARED_POSTGRES_PORT, fresh_database, postgres_url, shared_redis_database, unique_name
from tests.conftest import launch_server
from tests.test_schemathesis import (  # noqa: F401 (the fixtures and tests run here as they are)
    NO_RATE_LIMITS,
    schema,
    test_every_operation_answers_as_documented_with_a_token,
    test_operations_that_need_a_token_refuse_without_one,
    user,
)

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    prefix = unique_name("schemathesis")
    with (
        fresh_database(SHARED_POSTGRES_PORT) as name,
        shared_redis_database(prefix) as redis_url,
        launch_server(
            tmp_path_factory.mktemp("schemathesis-scale-out"),
            DATABASE_URL=postgres_url(port=SHARED_POSTGRES_PORT, dbname=name),
            REDIS_URL=redis_url,
            CHAT_REDIS_PREFIX=prefix,
            **NO_RATE_LIMITS,
        ) as server,
    ):
        yield server
