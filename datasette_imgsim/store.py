"""The index: vec0 tables and _imgsim_ bookkeeping. The one place that writes it."""
from __future__ import annotations

import base64
import datetime
import functools
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

import numpy as np

from datasette.utils.sqlite import sqlite3

MAX_K = 1000

# Float indexes of at least this many dimensions get a companion vec0 table of sign
# bits that pre-filters KNN candidates (below it an exact scan is already cheap).
QUANTIZE_MIN_DIMS = 64
# Candidates taken from the bit pre-filter for an exact float re-rank: enough for
# recall@10 >= 0.99 on clustered CNN embeddings up to 1M rows (bench/query_speed.py
# measures it). sqlite-vec's top-k selection costs k x rows, so the bit table is split
# into PARTITIONS by rowid (a vec0 partition key) and each is asked for its share of
# the candidates plus a margin: about the same candidates at 1/PARTITIONS of that
# cost (at 100k rows, 220 candidates take 14 ms in 16 partitions, 45 ms in one).
CANDIDATES_PER_K = 20
MIN_CANDIDATES = 200
PARTITIONS = 16
PARTITION_MARGIN = 4
# Random hyperplanes per dimension. Two raise recall@10 from 220 candidates at 1M
# rows only from 0.994 to 0.997 but double the scan, so one.
BITS_PER_DIM = 1
MAX_CANDIDATES = 4096  # vec0's own limit on k
# Sign bits are taken around an origin between 0 and the collection's mean: the
# CENTRINGS fraction of the mean that finds the most exact neighbours of a sample of
# the collection (see choose_centring). Around 0, non-negative vectors (CNN after
# ReLU6, HOG, histograms) sit on the same side of most hyperplanes and the bits say
# little. Around the mean the bits are informative but Hamming distance estimates the
# angle between mean-centred vectors, blind to their length: rows near the mean
# (low-contrast crops' HOG) are near everything yet far in Hamming. Half the mean
# raised recall@10 on 12k HOG vectors of photo crops from 0.92 to 0.996, but on 1M
# clustered CNN embeddings lowered it from 0.996 to 0.991, hence the choice per index.
CENTRINGS = (1.0, 0.5)  # preferred first: a later one must find clearly more
CENTRING_MARGIN = 0.005
CENTRING_SAMPLE = 4096
CENTRING_QUERIES = 200
# The centre the sign bits are taken around is fitted on the first batch written,
# then refitted on everything stored whenever the index has grown 4x, until it was
# fitted on at least this many vectors; after that it stays fixed (new rows change
# the mean of a large collection very little, and a stale centre only makes the
# pre-filter a little less selective: the re-rank stays exact).
MEAN_SAMPLE_ROWS = 4096
# Float vectors are read one at a time for re-ranking; vec0 stores them in chunks
# that are single BLOBs, and reading one vector walks the chunk's overflow pages,
# so small chunks make that 20x faster (and inserts 10x faster) at no cost to scans.
FLOAT_CHUNK_SIZE = 8
# Each of the PARTITIONS starts with a whole chunk: at vec0's default of 1024 rows a
# 1280-bit table reserves 2.6 MB before its first row. 256 keeps small indexes small
# and costs nothing measurable at 100k rows.
BITS_CHUNK_SIZE = 256
# Candidates are re-ranked in statements of this many "rowid = ?" lookups joined by
# UNION ALL (always this many, padded with NULL, so the statement is prepared once):
# at 100k rows 288 candidates take 1.7 ms this way against 5.5 ms one statement each.
RERANK_BATCH = 32
# Index databases are read through a memory map of the whole file (SQLite clamps this
# to its compile-time maximum): a query's bit scan reads every row's code, and
# copying those pages into SQLite's page cache made it 35% slower (100k rows: 13.7 ms
# against 10.0 ms mapped), the re-rank 50%. The map shares the OS page cache, so it
# costs no memory of its own (though RSS counts mapped pages, once per connection).
MMAP_BYTES = 1 << 40

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

    @property
    def quantized(self) -> Optional[dict]:
        """The sign-bit pre-filter table's definition, for float indexes that have one:
        {"table", "bits", "seed" (of the random hyperplanes), "partitions",
        "centring" (the origin of the codes as a fraction of the mean), "mean" (base64
        little-endian float32, None before the first vector), "mean_rows" (how many
        vectors the mean was fitted on)}."""
        return self.params.get("quantized")

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
    return f"embedding float[{dims}] distance_metric={metric}, chunk_size={FLOAT_CHUNK_SIZE}"


def quantized_bits(dims: int) -> int:
    """Sign bits kept for a float vector: dims rounded up to whole 64-bit words,
    which sqlite-vec compares with one popcount each."""
    return math.ceil(dims / 64) * 64


@functools.lru_cache(maxsize=8)
def projection(dims: int, bits: int, seed: int) -> np.ndarray:
    """A (dims, bits) matrix of Gaussian random hyperplanes (SimHash), the same for
    the same seed on every machine: the normals come from PCG64's raw output (a stable
    stream) by Box-Muller, not from a numpy sampler whose algorithm may change.
    Made in blocks of the stream: whole-matrix temporaries took 0.5 s for HOG's size."""
    generator = np.random.PCG64(seed)
    normals = np.empty(dims * bits, np.float32)
    block = 1 << 18
    for start in range(0, dims * bits, block):
        n = min(block, dims * bits - start)
        raw = generator.random_raw(2 * n)
        uniform = ((raw >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0**53
        normals[start:start + n] = np.sqrt(-2 * np.log(uniform[0::2])) * np.cos(2 * np.pi * uniform[1::2])
    return normals.reshape(dims, bits)


def _for_signs(vectors: np.ndarray, metric: str) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    if metric == "cosine":
        # Cosine ignores length: quantize directions, not magnitudes.
        norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)
    return vectors


def sign_bits(vectors: np.ndarray, quantized: dict, metric: str) -> np.ndarray:
    """Packed bits of an index's vectors: on which side of each random hyperplane
    through the origin of the codes each vector lies (one row of quantized["bits"]
    bits per vector); that origin is quantized["centring"] (see CENTRINGS; indexes
    made before it was stored used 1) times the collection's mean.

    Hamming distance between such codes estimates the angle between the vectors as
    seen from that origin (SimHash), which ranks like the float metric. Random
    hyperplanes rather than the coordinate axes: on real CNN embeddings recall@10 from
    40 candidates rises from 0.97 to 0.99 (bench/query_speed.py), because no single
    sparse dimension decides a bit."""
    vectors = np.atleast_2d(_for_signs(vectors, metric))
    origin = quantized.get("centring", 1.0) * _decode_mean(quantized["mean"])
    planes = projection(vectors.shape[1], quantized["bits"], quantized.get("seed", 0))
    if len(vectors) == 1:
        # A query: einsum's own loop (0.2 ms) rather than multi-threaded BLAS, whose
        # threads wake up slowly on a busy server (8 ms for this one product).
        projected = np.einsum("ij,jk->ik", vectors - origin, planes)
    else:
        projected = (vectors - origin) @ planes
    return np.packbits(projected > 0, axis=1)


_BYTE_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcount(packed: np.ndarray) -> np.ndarray:
    return np.bitwise_count(packed) if hasattr(np, "bitwise_count") else _BYTE_POPCOUNT[packed]


def choose_centring(vectors: np.ndarray, mean: np.ndarray, planes: np.ndarray, metric: str) -> float:
    """Of CENTRINGS, the origin (as a fraction of the mean) whose sign bits put most of
    a sample's exact 10 nearest neighbours among each query's nearest 1/64 by Hamming
    distance; the first one unless another finds CENTRING_MARGIN more. Cosine indexes
    are judged by cosine, l2 and l1 ones by Euclidean distance."""
    rng = np.random.default_rng(0)
    if len(vectors) > CENTRING_SAMPLE:
        vectors = vectors[rng.choice(len(vectors), CENTRING_SAMPLE, replace=False)]
    sample = _for_signs(vectors, metric)
    n = len(sample)
    if n < 64:
        return CENTRINGS[0]
    queries = rng.choice(n, min(CENTRING_QUERIES, n), replace=False)
    squares = (sample * sample).sum(axis=1)
    distance = squares[:, None] - 2 * sample @ sample[queries].T  # + |q|^2: same ranking
    distance[queries, np.arange(len(queries))] = np.inf
    nearest = np.argpartition(distance, 10, axis=0)[:10].T
    shortlist = max(20, n // 64)
    projected = sample @ planes
    shift = mean @ planes
    found = []
    for centring in CENTRINGS:
        codes = np.packbits(projected - centring * shift > 0, axis=1)
        hits = 0
        for query, true in zip(queries, nearest):
            hamming = _popcount(codes ^ codes[query]).sum(axis=1, dtype=np.int64)
            hamming[query] = hamming.max() + 1
            hits += np.isin(true, np.argpartition(hamming, shortlist)[:shortlist]).sum()
        found.append(hits / nearest.size)
    best = max(range(len(CENTRINGS)), key=found.__getitem__)
    return CENTRINGS[best] if found[best] > found[0] + CENTRING_MARGIN else CENTRINGS[0]


def _encode_mean(mean: np.ndarray) -> str:
    return base64.b64encode(np.asarray(mean, dtype="<f4").tobytes()).decode("ascii")


def _decode_mean(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4")


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
        vec_table = self._free_name(f"_imgsim_{_slug(table)}_{_slug(method)}")
        params = dict(params or {})
        quantized = None
        if element_type == "float" and dims >= QUANTIZE_MIN_DIMS:
            quantized = {"table": self._free_name(f"{vec_table}_bits"),
                         "bits": quantized_bits(dims * BITS_PER_DIM), "seed": 0,
                         "partitions": PARTITIONS, "mean": None, "mean_rows": 0}
            params["quantized"] = quantized
        stamp = now()
        with self.conn:
            self.conn.execute(
                "insert into _imgsim_indexes (table_name, image_column, pk_column, root, method, "
                "metric, dims, element_type, vec_table, params, created_at, updated_at) "
                "values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (table, column, pk, root, method, metric, dims, element_type, vec_table,
                 json.dumps(params), stamp, stamp),
            )
            self.conn.execute(
                f"create virtual table {quote_identifier(vec_table)} using vec0("
                f"{_vec_column(element_type, dims, metric)})"
            )
            if quantized:
                self.conn.execute(
                    f"create virtual table {quote_identifier(quantized['table'])} using vec0("
                    f"part integer partition key, embedding bit[{quantized['bits']}], "
                    f"chunk_size={BITS_CHUNK_SIZE})"
                )
        return self.index(table, method), reason

    def _free_name(self, base: str) -> str:
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
            if spec.quantized:
                self.conn.execute(f"drop table if exists {quote_identifier(spec.quantized['table'])}")
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
        written: list[tuple[int, np.ndarray]] = []
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
            written.append((item_id, result.vector))
            for rank, (label, probability) in enumerate(result.labels or (), start=1):
                self.conn.execute(
                    "insert into _imgsim_labels (item_id, table_name, pk, rank, label, probability) "
                    "values (?, ?, ?, ?, ?, ?)",
                    (item_id, spec.table, result.pk, rank, label, float(probability)),
                )
        if spec.quantized and written:
            self._write_bits(spec, written)

    def _write_bits(self, spec: IndexSpec, written: list[tuple[int, np.ndarray]]) -> None:
        """Sign bits of vectors just written, in the same transaction as the floats."""
        quantized = spec.quantized
        if quantized["mean"] is None:
            self._fit_mean(spec, np.stack([v for _, v in written]))
        elif quantized["mean_rows"] < MEAN_SAMPLE_ROWS:
            (count,) = self.conn.execute(
                "select count(*) from _imgsim_items where index_id = ? and error is null",
                (spec.id,)).fetchone()
            if count >= 4 * quantized["mean_rows"]:
                self._refit_mean(spec)
                return  # the refit rewrote every row's bits, these included
        quantized = spec.quantized  # _fit_mean replaced it
        bits = sign_bits(np.stack([v for _, v in written]), quantized, spec.metric)
        self._insert_bits(quantized, [item_id for item_id, _ in written], bits)

    def _insert_bits(self, quantized: dict, item_ids: list[int], bits: np.ndarray) -> None:
        partitions = quantized.get("partitions", 1)
        if partitions == 1:  # a bit table made before partitions, without the column
            self.conn.executemany(
                f"insert into {quote_identifier(quantized['table'])} (rowid, embedding) "
                "values (?, vec_bit(?))", [(i, row.tobytes()) for i, row in zip(item_ids, bits)])
            return
        self.conn.executemany(
            f"insert into {quote_identifier(quantized['table'])} (rowid, part, embedding) "
            "values (?, ?, vec_bit(?))",
            [(item_id, item_id % partitions, row.tobytes()) for item_id, row in zip(item_ids, bits)])

    def _fit_mean(self, spec: IndexSpec, vectors: np.ndarray) -> None:
        quantized = spec.quantized
        mean = _for_signs(vectors, spec.metric).mean(axis=0)
        planes = projection(vectors.shape[1], quantized["bits"], quantized.get("seed", 0))
        spec.params = {**spec.params, "quantized": {
            **quantized,
            "mean": _encode_mean(mean),
            "mean_rows": len(vectors),
            "centring": choose_centring(vectors, mean, planes, spec.metric)}}
        # Not set_params: that commits, and this runs inside the caller's transaction.
        self.conn.execute("update _imgsim_indexes set params = ? where id = ?",
                          (json.dumps(spec.params), spec.id))

    def _refit_mean(self, spec: IndexSpec) -> None:
        """Fit the centre on every stored vector and rewrite all sign bits."""
        rows = self.conn.execute(
            f"select rowid, embedding from {quote_identifier(spec.vec_table)}").fetchall()
        vectors = np.stack([np.frombuffer(blob, dtype=np.float32) for _, blob in rows])
        self._fit_mean(spec, vectors)
        quantized = spec.quantized
        table = quote_identifier(quantized["table"])
        self.conn.execute(f"delete from {table}")
        bits = sign_bits(vectors, quantized, spec.metric)
        self._insert_bits(quantized, [rowid for rowid, _ in rows], bits)

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
        if spec.quantized:
            self.conn.execute(
                f"delete from {quote_identifier(spec.quantized['table'])} where rowid = ?", (item_id,))
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

    def knn(self, spec: IndexSpec, vector: bytes, k: int,
            exact: bool = False) -> list[tuple[Any, float, int]]:
        """The k nearest neighbours: (pk, distance, item_id), nearest first.

        Float indexes with a sign-bit table take the nearest candidates by Hamming
        distance over all rows, then rank those by their exact float distance (so
        the distances, and the order of whatever is returned, are exact); with
        exact=True, or for indexes without that table (built by older versions, bit
        methods, few dimensions), sqlite-vec's exact scan of the float vectors."""
        if k <= 0:
            return []
        quantized = spec.quantized
        if not exact and quantized and quantized["mean"] is not None:
            return self._knn_prefiltered(spec, vector, k)
        rows = self.conn.execute(
            f"""select it.pk, v.distance, it.item_id from (
                    select rowid, distance from {quote_identifier(spec.vec_table)}
                    where embedding match {spec.vector_sql} and k = ?
                ) v join _imgsim_items it on it.item_id = v.rowid
                order by v.distance, it.item_id""",
            (vector, k),
        ).fetchall()
        return [(pk, float(d), item_id) for pk, d, item_id in rows]

    def _knn_prefiltered(self, spec: IndexSpec, vector: bytes, k: int) -> list[tuple[Any, float, int]]:
        quantized = spec.quantized
        query = np.frombuffer(vector, dtype=np.float32)
        bits = sign_bits(query, quantized, spec.metric)[0]
        partitions = quantized.get("partitions", 1)
        candidates = max(k * CANDIDATES_PER_K, MIN_CANDIDATES)
        share = min(-(-candidates // partitions) + (PARTITION_MARGIN if partitions > 1 else 0),
                    MAX_CANDIDATES)
        sql = (f"select rowid from {quote_identifier(quantized['table'])} "
               "where embedding match vec_bit(?) and k = ?")
        if partitions == 1:
            item_ids = [i for (i,) in self.conn.execute(sql, (bits.tobytes(), share))]
        else:
            item_ids = [i for part in range(partitions)
                        for (i,) in self.conn.execute(sql + " and part = ?", (bits.tobytes(), share, part))]
        # vec0 answers "rowid = ?" from its rowid table but "rowid in (...)" with a
        # scan, hence lookups joined by UNION ALL. The distance function is the one
        # the exact scan uses, so both paths give the same distances.
        distance = {"cosine": "vec_distance_cosine", "l2": "vec_distance_l2",
                    "l1": "vec_distance_l1"}[spec.metric]
        sql = " union all ".join(
            f"select rowid, {distance}(embedding, ?1) from {quote_identifier(spec.vec_table)} "
            f"where rowid = ?{n + 2}" for n in range(RERANK_BATCH))
        scored = []
        for start in range(0, len(item_ids), RERANK_BATCH):
            batch = item_ids[start:start + RERANK_BATCH]
            batch += [None] * (RERANK_BATCH - len(batch))
            scored.extend((float(d), item_id) for item_id, d in self.conn.execute(sql, (vector, *batch)))
        scored.sort()
        scored = scored[:k]
        pks = dict(self.conn.execute(
            "select item_id, pk from _imgsim_items where item_id in (select value from json_each(?))",
            (json.dumps([item_id for _, item_id in scored]),)))
        return [(pks[item_id], d, item_id) for d, item_id in scored if item_id in pks]

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
