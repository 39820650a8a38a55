"""Plain SQL for the hot paths (the group-commit batch, a page of history).

Built by the ORM, these small queries cost more to compile than the database takes to run them
(docs/performance.md, "Levers"). Values come back as the ORM would give them: `converter` applies
the same conversions the ORM applies to a column (SQLite's datetime text becomes an aware datetime).
"""

from collections.abc import Callable

from django.db import connection


def table(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def placeholders(values) -> tuple[str, list]:
    """`%s, %s, ...` for an IN (...) list, and its parameters."""
    values = list(values)
    return ", ".join(["%s"] * len(values)), values


def rows(sql: str, params: list) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [tuple(row) for row in cursor.fetchall()]


def converter(model, field_name: str) -> Callable:
    """A function turning the database's value of the field into the ORM's."""
    column = model._meta.get_field(field_name).get_col(model._meta.db_table)
    steps = connection.ops.get_db_converters(column) + column.get_db_converters(connection)

    def convert(value):
        for step in steps:
            value = step(value, column, connection)
        return value

    return convert
