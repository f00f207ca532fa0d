"""The _imgsim_ tables and the definition of one index (IndexSpec)."""
from __future__ import annotations

import datetime
import json
import re
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

SCHEMA = """
CREATE TABLE IF NOT EXISTS _imgsim_indexes (
    id INTEGER PRIMARY KEY,
    table_name TEXT NOT NULL,
    image_column TEXT NOT NULL,
    pk_column TEXT NOT NULL,
    root TEXT,
    method TEXT NOT NULL,
    metric TEXT NOT NULL,
    dims INTEGER NOT NULL,
    element_type TEXT NOT NULL,
    vec_table TEXT NOT NULL UNIQUE,
    params TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (table_name, method)
);
-- One row per (index, source row): the key, what the image looked like when
-- it was processed (for incremental runs), and the error if it failed.
-- item_id is the rowid of the row's vector in the index's vector table.
CREATE TABLE IF NOT EXISTS _imgsim_items (
    item_id INTEGER PRIMARY KEY,
    index_id INTEGER NOT NULL REFERENCES _imgsim_indexes(id),
    pk,
    fingerprint TEXT NOT NULL,
    error TEXT,
    indexed_at TEXT NOT NULL,
    UNIQUE (index_id, pk)
);
CREATE TABLE IF NOT EXISTS _imgsim_labels (
    item_id INTEGER NOT NULL REFERENCES _imgsim_items(item_id),
    table_name TEXT NOT NULL,
    pk,
    rank INTEGER NOT NULL,
    label TEXT NOT NULL,
    probability REAL NOT NULL,
    PRIMARY KEY (item_id, rank)
);
CREATE INDEX IF NOT EXISTS _imgsim_labels_by_label ON _imgsim_labels(label, table_name);
CREATE INDEX IF NOT EXISTS _imgsim_labels_by_pk ON _imgsim_labels(table_name, pk);
-- Folders the pages may read image files from, per index name (every method of it):
-- kept apart from the index definitions, so changing them never rebuilds an index.
-- origin: 'index' (derived when indexing) or 'user' (datasette imgsim roots --add).
CREATE TABLE IF NOT EXISTS _imgsim_roots (
    table_name TEXT NOT NULL,
    root TEXT NOT NULL,
    origin TEXT NOT NULL,
    PRIMARY KEY (table_name, root)
);
CREATE VIEW IF NOT EXISTS _imgsim_errors AS
    SELECT i.table_name, i.image_column, i.method, it.pk, it.error, it.indexed_at
    FROM _imgsim_items it JOIN _imgsim_indexes i ON i.id = it.index_id
    WHERE it.error IS NOT NULL;
"""

INDEX_COLUMNS = (
    "id, table_name, image_column, pk_column, root, method, metric, dims, element_type, "
    "vec_table, params, created_at, updated_at"
)
PREFIX = "_imgsim_"
ERRORS_VIEW = "_imgsim_errors"


def is_internal(name: str) -> bool:
    """Whether a table belongs to the plugin (or SQLite) rather than to the user."""
    return name.lower().startswith((PREFIX, "sqlite_"))


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def slug(name: str) -> str:
    return re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower() or "t"


@dataclass
class IndexSpec:
    id: int
    table: str
    column: str
    pk: str
    root: Optional[str]
    method: str
    metric: str
    dims: int
    element_type: str
    vec_table: str
    params: dict = field(default_factory=dict)
    created_at: str = ""
    updated_at: str = ""

    @property
    def quantized(self) -> Optional[dict]:
        """The sign-bit pre-filter table's definition, for float indexes that have one:
        {"table", "bits", "seed" (of the random hyperplanes), "partitions",
        "centring" (the origin of the codes as a fraction of the mean), "mean" (base64
        little-endian float32, None before the first vector), "mean_rows" (how many
        vectors the mean was fitted on)}."""
        return self.params.get("quantized")

    @property
    def source(self) -> dict:
        """For an index over a query (an app preset or --sql): {"sql", "app", "caption_column",
        "date_column", "versions_sql"}; {} for an index over a table or view."""
        return self.params.get("source") or {}

    @property
    def source_sql(self) -> Optional[str]:
        return self.source.get("sql")

    @property
    def dtype(self):
        """The numpy type of this index's vectors: float32, or uint8 bytes of packed bits."""
        return np.uint8 if self.element_type == "bit" else np.float32

    def as_vector(self, value: Any) -> np.ndarray:
        """A vector given as bytes (a stored BLOB) or an array, as this index's numpy type."""
        if isinstance(value, (bytes, bytearray, memoryview)):
            return np.frombuffer(bytes(value), dtype=self.dtype)
        return np.ascontiguousarray(value, dtype=self.dtype).reshape(-1)

    @classmethod
    def from_row(cls, row) -> "IndexSpec":
        (id, table, column, pk, root, method, metric, dims, element_type, vec_table,
         params, created_at, updated_at) = row
        return cls(id, table, column, pk, root, method, metric, dims, element_type,
                   vec_table, json.loads(params or "{}"), created_at, updated_at)


@dataclass
class ItemResult:
    """What indexing one row gave for one index: a vector (and labels) or an error."""

    pk: Any
    fingerprint: str
    vector: Optional[np.ndarray] = None
    labels: Optional[list] = None
    error: Optional[str] = None


def ensure_schema(conn) -> None:
    """Create the _imgsim_ tables that are missing (databases indexed by older versions
    lack the newer ones)."""
    if not conn.execute(
            "select 1 from main.sqlite_master where name = '_imgsim_roots'").fetchone():
        conn.executescript(SCHEMA)
        conn.commit()


def has_table(conn, name: str) -> bool:
    """Whether a table is reachable by its unqualified name (main or an attached sidecar)."""
    for _, schema, _ in conn.execute("pragma database_list").fetchall():
        if conn.execute(f'select 1 from "{schema}".sqlite_master where name = ?', (name,)).fetchone():
            return True
    return False


def save_params(conn, spec: IndexSpec) -> None:
    """Store spec.params; inside the caller's transaction (it does not commit)."""
    conn.execute("update _imgsim_indexes set params = ? where id = ?",
                 (json.dumps(spec.params), spec.id))


def free_name(conn, base: str) -> str:
    """base, or base_2, base_3...: a table name no object of the database has yet."""
    name, n = base, 1
    while conn.execute(
        "select 1 from sqlite_master where lower(name) = lower(?)", (name,)
    ).fetchone():
        n += 1
        name = f"{base}_{n}"
    return name
