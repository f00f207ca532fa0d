"""Index databases kept beside an app-owned photo database, attached when it is served."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable, Optional

from .connection import file_uri, map_into_memory, quote_identifier

SUFFIX = "-imgsim.db"
SCHEMA = "_imgsim_index"

# Per served database file: a callable that attaches its index database to a connection
# if that file exists now (a sidecar created while Datasette serves the photos). Keyed
# by the database's real path, so it stays as small as the set of served databases.
_late_attachers: dict[str, Callable] = {}
_lock = threading.Lock()


def sidecar_path(database_path) -> Path:
    """The conventional index file for a database: photos.db -> photos-imgsim.db beside it."""
    path = Path(database_path)
    return path.with_name(path.stem + SUFFIX)


def find_sidecar(database_path, configured: Optional[str] = None) -> Optional[Path]:
    """The index database for database_path: the configured one, or the conventional
    one if that file exists."""
    if configured:
        path = Path(configured)
        if not path.is_absolute():
            path = Path(database_path).resolve().parent / path
        return path
    if database_path is None:
        return None
    path = sidecar_path(database_path)
    return path if path.exists() else None


def attached_files(conn) -> dict[str, str]:
    """{schema name: file} of a connection's databases."""
    return {row[1]: row[2] for row in conn.execute("pragma database_list")}


def attach(conn, path) -> None:
    """Attach an index database read-only. Unqualified _imgsim_ names then resolve to it
    (SQLite searches main, then attached databases), so queries work unchanged."""
    if SCHEMA in attached_files(conn):
        return
    conn.execute(f"attach database ? as {quote_identifier(SCHEMA)}", (file_uri(path, "ro"),))
    map_into_memory(conn, SCHEMA)


def attach_late(conn) -> bool:
    """Attach the index database of conn's main database if one appeared since; True if
    it did."""
    main = attached_files(conn).get("main") or ""
    with _lock:
        attacher = _late_attachers.get(str(Path(main).resolve())) if main else None
    return bool(attacher and attacher(conn))


def attach_served(conn, database_path, configured: Optional[str]) -> None:
    """Attach the index database of a database Datasette serves (plugin config
    `index_db`, or the naming convention), so SQL functions and pages find it; one
    created later (indexing while serving) is attached on first use."""
    if database_path is None:
        return
    main_file = str(Path(database_path).resolve())

    def attach_if_present(connection) -> bool:
        files = attached_files(connection)
        if SCHEMA in files or str(Path(files.get("main") or "").resolve()) != main_file:
            return False
        found = find_sidecar(database_path, configured)
        if found is None or not found.exists() or found.resolve() == Path(main_file):
            return False
        attach(connection, found)
        return True

    attach_if_present(conn)
    with _lock:
        _late_attachers[main_file] = attach_if_present
