"""Which VectorBackend holds an index's vectors, from the configured index_db.

    index_db: photos-imgsim.db            vectors in sqlite-vec tables of that file (default)
    index_db: milvus://host:19530/db      vectors in a Milvus server (standalone or cluster)
    index_db: milvus+lite:/data/photos.milvus.db   (or any path ending .milvus.db)
                                          vectors in a Milvus Lite file (one machine)

With Milvus the catalogue (_imgsim_ tables) still lives in SQLite: in the conventional
index database beside the photos (photos.db -> photos-imgsim.db), see catalogue_path().
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from . import sidecar
from .backend import VectorBackend
from .milvus import is_milvus
from .vec0 import Vec0Backend


def backend_for(conn, index_db: Optional[str] = None) -> VectorBackend:
    """The backend for an index_db setting (None: the sqlite-vec tables of conn)."""
    if is_milvus(index_db):
        try:
            from .milvus import MilvusBackend

            return MilvusBackend(str(index_db))
        except ImportError as e:  # pymilvus missing
            from ..errors import ExtensionUnavailable

            raise ExtensionUnavailable(
                f"index_db {index_db!r} needs Milvus support: pip install 'datasette-imgsim[milvus]' ({e})"
            ) from None
    return Vec0Backend(conn)


def catalogue_path(database_path, index_db: Optional[str] = None) -> Optional[Path]:
    """The SQLite file holding the catalogue: index_db itself unless it names Milvus, then
    the conventional sidecar of database_path."""
    if is_milvus(index_db):
        return sidecar.sidecar_path(database_path) if database_path else None
    return sidecar.find_sidecar(database_path, index_db)


# Served databases whose vectors live in Milvus (plugin config index_db: milvus://...), by
# the real path of the photo database: a Store over one of their connections uses it.
_served: dict[str, str] = {}


def serve_with(database_path, index_db: Optional[str]) -> None:
    """Record that a served database's index uses the backend index_db names."""
    if database_path and is_milvus(index_db):
        _served[str(Path(database_path).resolve())] = str(index_db)


def default_backend(conn) -> VectorBackend:
    """The backend of a connection's index: Milvus for a database served with it, else vec0."""
    if _served:
        main = sidecar.attached_files(conn).get("main") or ""
        index_db = _served.get(str(Path(main).resolve())) if main else None
        if index_db:
            return backend_for(conn, index_db)
    return Vec0Backend(conn)
