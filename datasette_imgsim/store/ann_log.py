"""The change log behind an index's HNSW graph (ann.py), and what it says since a generation.

Every add/remove of a vector appends (generation, item id) to ``<vec_table>_ann_log``
in the same transaction as the vectors (Vec0Backend does it), so the index's
generation, the largest in the log, is committed or rolled back with them. A graph
records the generation it reflects; the log rows after it are the changes it lacks.
Those can be read as a Delta: the changed rows as they stand now, small enough to be
searched exactly beside the graph until the graph takes them in.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from .connection import MEMORY, quote_identifier


def log_table(spec) -> str:
    return f"{spec.vec_table}_ann_log"


def create_log(conn, spec) -> None:
    conn.execute(f"create table if not exists {quote_identifier(log_table(spec))} "
                 "(generation integer primary key, item_id integer not null)")


def drop_log(conn, spec) -> None:
    conn.execute(f"drop table if exists {quote_identifier(log_table(spec))}")


def record(conn, spec, item_ids: Sequence[int]) -> None:
    """Append changed item ids to the log (inside the caller's transaction)."""
    if spec.params.get("ann") and len(item_ids):
        conn.executemany(f"insert into {quote_identifier(log_table(spec))} (item_id) values (?)",
                         [(int(i),) for i in item_ids])


def log_bounds(conn, spec) -> tuple[int, int]:
    """(oldest generation still in the log, newest = the index's generation); (0, 0) if empty."""
    row = conn.execute(f"select min(generation), max(generation) from "
                       f"{quote_identifier(log_table(spec))}").fetchone()
    return (row[0] or 0, row[1] or 0)


def changed_ids(conn, spec, after: int, upto: int) -> list[int]:
    """Item ids changed in generations (after, upto], each once."""
    return [i for (i,) in conn.execute(
        f"select distinct item_id from {quote_identifier(log_table(spec))} "
        "where generation > ? and generation <= ?", (after, upto))]


def prune(conn, spec, upto: int) -> None:
    """Forget log rows a saved graph covers, but the newest (it holds the generation)."""
    with conn:
        conn.execute(f"delete from {quote_identifier(log_table(spec))} where generation <= ? "
                     f"and generation < (select max(generation) from "
                     f"{quote_identifier(log_table(spec))})", (upto,))


def database_file(conn, table: str) -> Optional[str]:
    """The file of the database (main or attached) that holds table; None in memory."""
    for _, schema, file in conn.execute("pragma database_list").fetchall():
        if conn.execute(f"select 1 from {quote_identifier(schema)}.sqlite_master "
                        "where name = ?", (table,)).fetchone():
            return file if file and file != MEMORY else None
    return None


def row_count(conn, spec) -> int:
    return conn.execute(f"select count(*) from {quote_identifier(spec.vec_table)}").fetchone()[0]


def read_rows(conn, spec, item_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(ids still stored, their vectors (n, dims) float32, ids no longer stored)."""
    table = quote_identifier(spec.vec_table)
    ids, blobs, gone = [], [], []
    for item_id in item_ids:
        # vec0 answers "rowid = ?" from its rowid table, "rowid in (...)" with a scan.
        row = conn.execute(f"select embedding from {table} where rowid = ?", (item_id,)).fetchone()
        if row is None:
            gone.append(item_id)
        else:
            ids.append(item_id)
            blobs.append(row[0])
    vectors = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(ids), spec.dims)
    return np.array(ids, dtype=np.int64), vectors, gone


@dataclass(frozen=True)
class Delta:
    """The rows changed after generation `base` up to `upto`, as they stand at `upto`:
    `ids` still stored (with `vectors`, unit length for cosine so a dot product ranks
    them), `gone` removed. A query searches them exactly beside a graph at `base`."""
    base: int
    upto: int
    ids: np.ndarray
    vectors: np.ndarray
    gone: frozenset
    metric: str

    @property
    def changed(self) -> int:
        return len(self.ids) + len(self.gone)

    def nearest(self, query: np.ndarray, n: int, allowed=None) -> list[int]:
        """The n changed rows nearest to query (for the exact re-rank to order)."""
        ids, vectors = self.ids, self.vectors
        if allowed is not None and len(ids):
            keep = np.fromiter((int(i) in allowed for i in ids), dtype=bool, count=len(ids))
            ids, vectors = ids[keep], vectors[keep]
        if not len(ids) or n <= 0:
            return []
        if self.metric == "cosine":
            scores = vectors @ (query / max(float(np.linalg.norm(query)), 1e-30))
        else:  # l2: the smaller the squared distance, the higher the score
            scores = -((vectors - query) ** 2).sum(axis=1)
        if n < len(ids):
            top = np.argpartition(-scores, n - 1)[:n]
            return ids[top].tolist()
        return ids.tolist()


def read_delta(conn, spec, base: int, upto: int, previous: Optional[Delta] = None) -> Delta:
    """The Delta of (base, upto]; from `previous` (same base, upto before this one) only
    the rows changed since it are read. Read in one snapshot, outside a transaction."""
    start = previous.upto if previous is not None and previous.base == base \
        and previous.upto <= upto else base
    conn.execute("begin")
    try:
        changed = changed_ids(conn, spec, start, upto)
        ids, vectors, gone = read_rows(conn, spec, changed)
    finally:
        conn.execute("rollback")
    if spec.metric == "cosine" and len(vectors):
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-30)
    gone_set = frozenset(gone)
    if start != base:  # merge: the newer state of a row replaces the older one
        reread = set(changed)
        old = np.fromiter((int(i) not in reread for i in previous.ids), dtype=bool,
                          count=len(previous.ids))
        ids = np.concatenate([previous.ids[old], ids])
        vectors = np.concatenate([previous.vectors[old], vectors])
        gone_set = frozenset((previous.gone - reread) | gone_set)
    return Delta(base, upto, ids, np.ascontiguousarray(vectors, dtype=np.float32), gone_set,
                 spec.metric)
