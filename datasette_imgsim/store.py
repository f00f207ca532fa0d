"""The index: vec0 tables and _imgsim_ bookkeeping. The one place that writes it."""
from __future__ import annotations

import datetime
import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

import numpy as np

from datasette.utils.sqlite import sqlite3

MAX_K = 1000

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
-- item_id is the rowid of the row's vector in the index's vec0 table.
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
CREATE VIEW IF NOT EXISTS _imgsim_errors AS
    SELECT i.table_name, i.image_column, i.method, it.pk, it.error, it.indexed_at
    FROM _imgsim_items it JOIN _imgsim_indexes i ON i.id = it.index_id
    WHERE it.error IS NOT NULL;
"""


class NotFound(LookupError):
    """A request for an index or row that is not there; the message is for the user."""


class ExtensionUnavailable(RuntimeError):
    pass


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


def has_sqlite_vec(conn) -> bool:
    try:
        conn.execute("select vec_version()").fetchone()
        return True
    except sqlite3.OperationalError:
        return False


def file_uri(path, mode: Optional[str] = None) -> str:
    """A file: URI for path (URIs let ATTACH open an index database read-only)."""
    import os
    from urllib.parse import quote

    uri = "file:" + quote(os.path.abspath(path))
    return uri + (f"?mode={mode}" if mode else "")


def connect(path: str, readonly: bool = False, timeout: float = 30.0):
    """A connection to a database file with sqlite-vec loaded."""
    conn = sqlite3.connect(file_uri(path, "ro" if readonly else None), uri=True, timeout=timeout)
    load_sqlite_vec(conn)
    if not readonly:
        # Readers (a Datasette serving this file) keep reading while a run writes.
        conn.execute("pragma journal_mode = wal")
    return conn


def quote_identifier(name: str) -> str:
    """An identifier quoted for SQL: the one way names reach a statement."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise ValueError(f"invalid identifier: {name!r}")
    return '"' + name.replace('"', '""') + '"'


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


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
    def vector_sql(self) -> str:
        """The SQL expression that turns a bound parameter into this index's vector type."""
        return "vec_bit(?)" if self.element_type == "bit" else "?"

    @classmethod
    def from_row(cls, row) -> "IndexSpec":
        (id, table, column, pk, root, method, metric, dims, element_type, vec_table,
         params, created_at, updated_at) = row
        return cls(id, table, column, pk, root, method, metric, dims, element_type,
                   vec_table, json.loads(params or "{}"), created_at, updated_at)


INDEX_COLUMNS = (
    "id, table_name, image_column, pk_column, root, method, metric, dims, element_type, "
    "vec_table, params, created_at, updated_at"
)


def _slug(name: str) -> str:
    return re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower() or "t"


def _vec_column(spec_element_type: str, dims: int, metric: str) -> str:
    if spec_element_type == "bit":
        return f"embedding bit[{dims}]"
    return f"embedding float[{dims}] distance_metric={metric}"


# Per open connection (by id): a callable that attaches an index database created
# after the connection was opened (a sidecar indexed while Datasette serves the
# photos) and says whether it did. Connections cannot carry attributes or weakrefs.
INDEX_FINDERS: dict[int, Any] = {}


class Store:
    """Reads and writes one database's _imgsim_ tables; the connection has sqlite-vec loaded."""

    def __init__(self, conn):
        self.conn = conn

    # --- schema and index definitions -------------------------------------------------

    def has_schema(self) -> bool:
        """Whether an index exists here, in this database or an attached sidecar."""
        for attempt in range(2):
            try:
                self.conn.execute("select 1 from _imgsim_indexes limit 0")
                return True
            except sqlite3.OperationalError:
                finder = INDEX_FINDERS.get(id(self.conn))
                if attempt or finder is None or not finder(self.conn):
                    return False
        return False

    def ensure_schema(self) -> None:
        if not self.conn.execute(
                "select 1 from main.sqlite_master where name = '_imgsim_indexes'").fetchone():
            self.conn.executescript(SCHEMA)
            self.conn.commit()

    def indexes(self, table: Optional[str] = None) -> list[IndexSpec]:
        if not self.has_schema():
            return []
        sql = f"select {INDEX_COLUMNS} from _imgsim_indexes"
        params: tuple = ()
        if table is not None:
            sql += " where table_name = ?"
            params = (table,)
        return [IndexSpec.from_row(r) for r in self.conn.execute(sql + " order by id", params)]

    def index(self, table: str, method: Optional[str] = None) -> IndexSpec:
        """The index for table and method; without a method, the table's default index."""
        specs = self.indexes(table)
        if not specs:
            raise NotFound(f"table {table!r} has no image index; run: datasette imgsim index DB --table {table} --column COLUMN")
        if method is None:
            return default_index(specs)
        for spec in specs:
            if spec.method == method:
                return spec
        raise NotFound(
            f"table {table!r} has no {method!r} index; it has: "
            + ", ".join(s.method for s in specs)
        )

    def create_index(self, table, column, pk, root, method, metric, dims, element_type,
                     params: Optional[dict] = None) -> tuple[IndexSpec, Optional[str]]:
        """Create the index, or return the existing one; an existing index whose
        definition differs is emptied and redefined (the reason is returned)."""
        self.ensure_schema()
        reason = None
        for existing in self.indexes(table):
            if existing.method != method:
                continue
            wanted = (column, pk, root, metric, dims, element_type)
            have = (existing.column, existing.pk, existing.root, existing.metric,
                    existing.dims, existing.element_type)
            if wanted == have:
                return existing, None
            changed = [n for n, a, b in zip(("column", "pk", "root", "metric", "dims", "type"),
                                             wanted, have) if a != b]
            reason = f"index definition changed ({', '.join(changed)}): rebuilding"
            self.drop_index(existing)
        vec_table = self._free_vec_table_name(table, method)
        stamp = now()
        with self.conn:
            self.conn.execute(
                "insert into _imgsim_indexes (table_name, image_column, pk_column, root, method, "
                "metric, dims, element_type, vec_table, params, created_at, updated_at) "
                "values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (table, column, pk, root, method, metric, dims, element_type, vec_table,
                 json.dumps(params or {}), stamp, stamp),
            )
            self.conn.execute(
                f"create virtual table {quote_identifier(vec_table)} using vec0("
                f"{_vec_column(element_type, dims, metric)})"
            )
        return self.index(table, method), reason

    def _free_vec_table_name(self, table: str, method: str) -> str:
        base = f"_imgsim_{_slug(table)}_{_slug(method)}"
        name, n = base, 1
        while self.conn.execute(
            "select 1 from sqlite_master where lower(name) = lower(?)", (name,)
        ).fetchone():
            n += 1
            name = f"{base}_{n}"
        return name

    def drop_index(self, spec: IndexSpec) -> None:
        with self.conn:
            self.conn.execute(
                "delete from _imgsim_labels where item_id in "
                "(select item_id from _imgsim_items where index_id = ?)", (spec.id,))
            self.conn.execute("delete from _imgsim_items where index_id = ?", (spec.id,))
            self.conn.execute(f"drop table if exists {quote_identifier(spec.vec_table)}")
            self.conn.execute("delete from _imgsim_indexes where id = ?", (spec.id,))

    def set_params(self, spec: IndexSpec, params: dict) -> None:
        spec.params = params
        with self.conn:
            self.conn.execute("update _imgsim_indexes set params = ? where id = ?",
                              (json.dumps(params), spec.id))

    # --- per-row state ----------------------------------------------------------------

    def fingerprints(self, spec: IndexSpec) -> dict[Any, str]:
        return dict(self.conn.execute(
            "select pk, fingerprint from _imgsim_items where index_id = ?", (spec.id,)))

    def write(self, spec: IndexSpec, results: Iterable["ItemResult"]) -> None:
        """Store a batch of results for one index. Call inside a transaction."""
        stamp = now()
        vec = quote_identifier(spec.vec_table)
        for result in results:
            self._delete_item(spec, result.pk)
            cursor = self.conn.execute(
                "insert into _imgsim_items (index_id, pk, fingerprint, error, indexed_at) "
                "values (?, ?, ?, ?, ?)",
                (spec.id, result.pk, result.fingerprint, result.error, stamp),
            )
            if result.error is not None:
                continue
            item_id = cursor.lastrowid
            self.conn.execute(
                f"insert into {vec} (rowid, embedding) values (?, {spec.vector_sql})",
                (item_id, result.vector.tobytes()),
            )
            for rank, (label, probability) in enumerate(result.labels or (), start=1):
                self.conn.execute(
                    "insert into _imgsim_labels (item_id, table_name, pk, rank, label, probability) "
                    "values (?, ?, ?, ?, ?, ?)",
                    (item_id, spec.table, result.pk, rank, label, float(probability)),
                )

    def delete(self, spec: IndexSpec, pks: Iterable[Any]) -> None:
        """Forget rows that left the source table. Call inside a transaction."""
        for pk in pks:
            self._delete_item(spec, pk)

    def _delete_item(self, spec: IndexSpec, pk) -> None:
        row = self.conn.execute(
            "select item_id from _imgsim_items where index_id = ? and pk = ?", (spec.id, pk)
        ).fetchone()
        if row is None:
            return
        (item_id,) = row
        self.conn.execute(f"delete from {quote_identifier(spec.vec_table)} where rowid = ?", (item_id,))
        self.conn.execute("delete from _imgsim_labels where item_id = ?", (item_id,))
        self.conn.execute("delete from _imgsim_items where item_id = ?", (item_id,))

    def touch(self, spec: IndexSpec) -> None:
        self.conn.execute("update _imgsim_indexes set updated_at = ? where id = ?", (now(), spec.id))

    # --- reading ----------------------------------------------------------------------

    def item_id(self, spec: IndexSpec, pk) -> Optional[int]:
        """The vector's rowid for a source row, matching '7' to 7 as URLs and SQL mix them."""
        candidates = [pk]
        if isinstance(pk, str):
            try:
                candidates.append(int(pk))
            except ValueError:
                pass
        elif isinstance(pk, (int, float)):
            candidates.append(str(pk))
        for candidate in candidates:
            row = self.conn.execute(
                "select item_id, error from _imgsim_items where index_id = ? and pk = ?",
                (spec.id, candidate),
            ).fetchone()
            if row is not None:
                if row[1] is not None:
                    raise NotFound(f"row {pk!r} of {spec.table!r} could not be indexed: {row[1]}")
                return row[0]
        return None

    def vector(self, spec: IndexSpec, item_id: int) -> bytes:
        row = self.conn.execute(
            f"select embedding from {quote_identifier(spec.vec_table)} where rowid = ?", (item_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no vector stored for item {item_id}")
        return row[0]

    def knn(self, spec: IndexSpec, vector: bytes, k: int) -> list[tuple[Any, float, int]]:
        """Exact k nearest neighbours: (pk, distance, item_id), nearest first."""
        if k <= 0:
            return []
        rows = self.conn.execute(
            f"""select it.pk, v.distance, it.item_id from (
                    select rowid, distance from {quote_identifier(spec.vec_table)}
                    where embedding match {spec.vector_sql} and k = ?
                ) v join _imgsim_items it on it.item_id = v.rowid
                order by v.distance, it.item_id""",
            (vector, k),
        ).fetchall()
        return [(pk, float(d), item_id) for pk, d, item_id in rows]

    def counts(self, spec: IndexSpec) -> dict[str, int]:
        indexed, failed = self.conn.execute(
            "select count(*) filter (where error is null), count(*) filter (where error is not null) "
            "from _imgsim_items where index_id = ?", (spec.id,)
        ).fetchone()
        return {"indexed": indexed, "errors": failed}

    def errors(self, spec: IndexSpec, limit: int = 100) -> list[tuple[Any, str]]:
        return self.conn.execute(
            "select pk, error from _imgsim_items where index_id = ? and error is not null "
            "order by item_id limit ?", (spec.id, limit)).fetchall()

    def labels(self, table: str, pk) -> list[tuple[str, float]]:
        rows = self.conn.execute(
            "select label, probability from _imgsim_labels where table_name = ? and pk = ? order by rank",
            (table, pk)).fetchall()
        if not rows and isinstance(pk, str) and pk.lstrip("-").isdigit():
            return self.labels(table, int(pk))
        return [(label, float(p)) for label, p in rows]


@dataclass
class ItemResult:
    pk: Any
    fingerprint: str
    vector: Optional[np.ndarray] = None
    labels: Optional[list] = None
    error: Optional[str] = None


def default_index(specs: list[IndexSpec]) -> IndexSpec:
    """The index a table's queries use when no method is named: cnn if built, else the first."""
    for spec in specs:
        if spec.method == "cnn":
            return spec
    return specs[0]
