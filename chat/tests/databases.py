"""Marks for tests of one database's code path."""

import pytest
from django.db import connection

# `make test` runs on SQLite; integration/test_chat_on_postgresql.py runs the app suites on PostgreSQL
# and checks that the tests named test_on_postgresql_ passed there.
on_postgresql = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="PostgreSQL only: integration/test_chat_on_postgresql.py runs it there"
)
on_sqlite = pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite only: the embedded configuration")
