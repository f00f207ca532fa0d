"""Connections to index databases: sqlite-vec loaded, WAL for writers, a memory map for readers."""
from __future__ import annotations

import os
from typing import Optional
from urllib.parse import quote

import sqlite3 as stdlib_sqlite3

from datasette.utils.sqlite import sqlite3

from ..errors import ExtensionUnavailable, InvalidName

# Index databases are read through a memory map of the whole file (SQLite clamps this
# to its compile-time maximum): a query's bit scan reads every row's code, and
# copying those pages into SQLite's page cache made it 35% slower (100k rows: 13.7 ms
# against 10.0 ms mapped), the re-rank 50%. The map shares the OS page cache, so it
# costs no memory of its own (though RSS counts mapped pages, once per connection).
MMAP_BYTES = 1 << 40
MEMORY = ":memory:"
# Datasette's sqlite3 may be pysqlite3, whose errors are not the standard library's; code
# handed connections of either kind catches both.
SQLITE_ERRORS = (sqlite3.Error, stdlib_sqlite3.Error)

EXTENSION_HELP = (
    "this Python's sqlite3 module cannot load SQLite extensions, which sqlite-vec needs. "
    "On Linux x86_64: pip install pysqlite3-binary. On macOS use a Python that allows "
    "extension loading (Homebrew's python, pyenv with PYTHON_CONFIGURE_OPTS="
    "'--enable-loadable-sqlite-extensions', or conda)."
)


def load_sqlite_vec(conn) -> None:
    """Load sqlite-vec into a connection, or raise ExtensionUnavailable saying how to fix it."""
    import sqlite_vec

    if not hasattr(conn, "enable_load_extension"):
        raise ExtensionUnavailable(EXTENSION_HELP)
    try:
        conn.enable_load_extension(True)
        sqlite_vec.load(conn)
    except (AttributeError, sqlite3.OperationalError) as e:
        raise ExtensionUnavailable(f"{EXTENSION_HELP} ({e})") from None
    finally:
        try:
            conn.enable_load_extension(False)
        except Exception:
            pass


def file_uri(path, mode: Optional[str] = None) -> str:
    """A file: URI for path (URIs let ATTACH open an index database read-only)."""
    uri = "file:" + quote(os.path.abspath(path))
    return uri + (f"?mode={mode}" if mode else "")


def connect(path: str, readonly: bool = False, timeout: float = 30.0):
    """A connection to a database file (or ":memory:") with sqlite-vec loaded."""
    if str(path) == MEMORY:
        # Through file_uri the name would become a real file called ":memory:".
        conn = sqlite3.connect(MEMORY, timeout=timeout)
        load_sqlite_vec(conn)
        return conn
    conn = sqlite3.connect(file_uri(path, "ro" if readonly else None), uri=True, timeout=timeout)
    load_sqlite_vec(conn)
    if not readonly:
        # Readers (a Datasette serving this file) keep reading while a run writes.
        conn.execute("pragma journal_mode = wal")
    map_into_memory(conn)
    return conn


def map_into_memory(conn, schema: str = "main") -> None:
    """Read one database of a connection through a memory map (see MMAP_BYTES)."""
    conn.execute(f"pragma {quote_identifier(schema)}.mmap_size = {MMAP_BYTES}")


def map_indexes(conn) -> None:
    """Memory-map each database of a connection that holds indexes (a served
    database: the user's other databases are left as Datasette opens them)."""
    for _, schema, _ in conn.execute("pragma database_list").fetchall():
        if conn.execute(
            f"select 1 from {quote_identifier(schema)}.sqlite_master "
            "where type = 'table' and name = '_imgsim_indexes'"
        ).fetchone():
            map_into_memory(conn, schema)


def quote_identifier(name: str) -> str:
    """An identifier quoted for SQL: the one way names reach a statement."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise InvalidName(f"invalid identifier: {name!r}")
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """A string as a SQL literal, for the rare statement that cannot bind it (a view or a
    stored query that must stand alone)."""
    if not isinstance(value, str) or "\x00" in value:
        raise InvalidName(f"invalid SQL text value: {value!r}")
    return "'" + value.replace("'", "''") + "'"
