"""Schema helpers shared by the presets: cheap, read-only, and never raising on odd databases."""
from __future__ import annotations

from typing import Iterable

from ..store.connection import SQLITE_ERRORS

from ..files import covering_folders  # noqa: F401 (re-exported)
from ..store.connection import quote_identifier, quote_literal  # noqa: F401 (re-exported)


def tables(conn) -> dict[str, list[tuple[str, str]]]:
    """{table name: [(column name, declared type), ...]} for the main schema's tables.

    Any error (not a database, encrypted, locked, corrupt) yields {} so detect() can say False.
    """
    try:
        names = [r[0] for r in conn.execute("select name from sqlite_master where type = 'table'")]
        return {name: [(r[1], r[2] or "") for r in conn.execute(f"pragma table_info({quote_identifier(name)})")]
                for name in names}
    except SQLITE_ERRORS:
        return {}


def has_columns(schema: dict, table: str, columns: Iterable[str]) -> bool:
    """True when `table` exists (case-insensitively, as SQLite resolves names) with all `columns`."""
    for name, cols in schema.items():
        if name.lower() == table.lower():
            present = {c.lower() for c, _ in cols}
            return all(c.lower() in present for c in columns)
    return False


def scalar(conn, sql: str, params=()):
    try:
        row = conn.execute(sql, params).fetchone()
    except SQLITE_ERRORS:
        return None
    return row[0] if row else None
