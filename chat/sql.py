"""Plain SQL for the hot paths (the group-commit batch, a page of history).

Built by the ORM, these small queries cost more to compile than the database takes to run them
(docs/performance.md, "Levers"). Values come back as the ORM would give them: `converter` applies
the same conversions the ORM applies to a column (SQLite's datetime text becomes an aware datetime).
"""

import functools
from collections.abc import Callable
from datetime import UTC

from django.db import connection


def table(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def placeholders(values) -> tuple[str, list]:
    """`%s, %s, ...` for an IN (...) list, and its parameters."""
    values = list(values)
    return ", ".join(["%s"] * len(values)), values


def rows(sql: str, params: list, *, server_binding: bool = False) -> list[tuple]:
    with cursor(server_binding=server_binding) as found:
        _timestamps_loaded_in_c(found)
        found.execute(sql, params)
        return [tuple(row) for row in found.fetchall()]


def execute(sql: str, params: list, *, server_binding: bool = False) -> None:
    with cursor(server_binding=server_binding) as statement:
        statement.execute(sql, params)


def cursor(*, server_binding: bool = False):
    """Django's cursor. With server_binding=True, on PostgreSQL, one that sends the parameters apart
    from the statement (psycopg's Cursor, not the ClientCursor Django uses), for statements that
    take a few arrays: psycopg need not rewrite their text with every value quoted into it. It is
    wrapped as Django wraps its own (errors, query log, execute wrappers), but without the time
    zone loader Django gives each of its cursors: not for statements that read timestamps."""
    if not server_binding or connection.vendor != "postgresql":
        return connection.cursor()
    from django.db.backends.postgresql.base import ServerBindingCursor  # psycopg 3's Cursor, as Django wraps it

    connection.close_if_health_check_failed()
    connection.ensure_connection()
    connection.validate_thread_sharing()
    found = ServerBindingCursor(connection.connection)
    return connection.make_debug_cursor(found) if connection.queries_logged else connection.make_cursor(found)


def _timestamps_loaded_in_c(found) -> None:
    """On PostgreSQL in UTC, timestamps read by psycopg's own loader (C) rather than Django's.

    Django registers a Python subclass of psycopg's timestamptz loader that sets the value's tzinfo
    to `connection.timezone` (9–16 µs a value: a quarter of a history page's answer). psycopg's gives
    the same datetime when the session's time zone is UTC and so is Django's (the database's
    TIME_ZONE left unset): both then carry `datetime.UTC`. Any other time zone keeps Django's.
    """
    if connection.vendor != "postgresql" or connection.timezone is not UTC:
        return
    from psycopg.types.datetime import TimestamptzLoader  # registered as its C version when there is one

    if found.cursor.connection.info.parameter_status("TimeZone") == "UTC":
        found.cursor.adapters.register_loader("timestamptz", TimestamptzLoader)


def converter(model, field_name: str) -> Callable:
    """A function turning the database's value of the field into the ORM's."""
    column = model._meta.get_field(field_name).get_col(model._meta.db_table)
    steps = connection.ops.get_db_converters(column) + column.get_db_converters(connection)

    def convert(value):
        for step in steps:
            value = step(value, column, connection)
        return value

    return convert


def instance(model, where: str, params: list):
    """The first row where `where` holds, as the ORM builds its instance (every concrete field, each
    value converted as the ORM converts it), or None. For lookups by a unique key: no ordering."""
    names, columns, conversions = _reader(model)
    found = rows(f"SELECT {columns} FROM {table(model)} WHERE {where} LIMIT 1", params)
    if not found:
        return None
    values = [convert(value) for convert, value in zip(conversions, found[0], strict=True)]
    return model.from_db(connection.alias, names, values)


@functools.cache
def _reader(model) -> tuple[list[str], str, list[Callable]]:
    fields = model._meta.concrete_fields
    columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    return [field.attname for field in fields], columns, [converter(model, field.name) for field in fields]
