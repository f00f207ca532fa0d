"""Index databases kept beside an app-owned photo database, attached when it is served."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from .store import INDEX_FINDERS, file_uri, map_into_memory, quote_identifier

SUFFIX = "-imgsim.db"
SCHEMA = "_imgsim_index"


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


def attach(conn, path) -> None:
    """Attach an index database read-only. Unqualified _imgsim_ names then resolve to it
    (SQLite searches main, then attached databases), so queries work unchanged."""
    attached = {row[1] for row in conn.execute("pragma database_list")}
    if SCHEMA in attached:
        return
    conn.execute(f"attach database ? as {quote_identifier(SCHEMA)}", (file_uri(path, "ro"),))
    map_into_memory(conn, SCHEMA)


def attach_served(conn, datasette, database: str) -> None:
    """Attach the index database of a database Datasette serves (plugin config
    `index_db`, or the naming convention), so SQL functions and pages find it;
    one created later (indexing while serving) is attached on first use."""
    db = datasette.databases.get(database)
    path = getattr(db, "path", None)
    if path is None:
        return
    config = datasette.plugin_config("datasette-imgsim", database=database) or {}
    main_file = str(Path(path).resolve())

    def attach_if_present(connection) -> bool:
        files = {row[1]: row[2] for row in connection.execute("pragma database_list")}
        if SCHEMA in files or str(Path(files.get("main") or "").resolve()) != main_file:
            return False
        sidecar = find_sidecar(path, config.get("index_db"))
        if sidecar is None or not sidecar.exists() or sidecar.resolve() == Path(main_file):
            return False
        attach(connection, sidecar)
        return True

    attach_if_present(conn)
    INDEX_FINDERS[id(conn)] = attach_if_present
