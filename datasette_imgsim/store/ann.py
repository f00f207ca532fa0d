"""A derived HNSW graph (hnswlib) beside the index database, for sub-linear KNN.

SQLite stays the source of truth. The graph is rebuilt from, or brought up to date with,
the vec0 rows; it is never trusted beyond what the database says:

- Every add/remove of a vector appends (generation, item id) to the index's change log,
  ``<vec_table>_ann_log``, in the same transaction as the vectors (Vec0Backend does it).
  The index's generation is the largest generation in that log: it is committed, or
  rolled back, with the vectors.
- A graph in memory (one per process and index, shared by every connection and thread)
  records the generation it reflects. A query compares it with the log: equal, the graph
  answers; a few changes behind, the query applies them (reading the changed rows'
  vectors from vec0) and answers; further behind, inside a write transaction (which may
  yet roll back), or with no graph at all, the caller falls back to the exact/pre-filter
  path. A graph is never used to answer for a generation it does not reflect.
- ``refresh()`` (Store.refresh_ann, run by the writer after committing) applies the log,
  rebuilds when the graph is missing or worn out by deletions, and now and then saves it
  as ``<index db>.ann/<vec_table>.<uuid>.<generation>.hnsw``: written under a temporary
  name, fsynced, then renamed, so a reader (or a kill -9) sees a whole file or none; the
  generation in its name says which state it reflects. Log rows the saved file covers
  are then pruned (the newest row is kept: it carries the generation).
- A process without the graph in memory loads the newest saved file whose generation it
  can still catch up from (the log holds every later change), and whose row count
  agrees with the database's.

Candidates from the graph are re-ranked by their exact distance read from vec0, so
distances (and order) are exactly the exact path's for whatever is returned.
"""
from __future__ import annotations

import os
import re
import threading
import time
import uuid as uuidlib
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .connection import MEMORY, quote_identifier

try:  # an ordinary dependency, but the store works (exact/pre-filter) without it
    import hnswlib
except ImportError:  # pragma: no cover
    hnswlib = None

# Chosen by bench/ann_speed.py: at 100k x 1280-d clustered CNN vectors M 16 /
# construction ef 200 / search ef 48 gives recall@10 >= 0.99 for rows and held-out
# queries (usearch and faiss HNSW at their defaults do not, see the README).
M = 16
EF_CONSTRUCTION = 200
EF_SEARCH = 48
# Below this many rows the pre-filter answers in a few ms and no graph is kept.
MIN_ROWS = 5000
# Changes a query may apply itself before answering (each costs about a graph insert,
# ~1 ms at 1280-d); beyond, it answers through the pre-filter until refresh() runs.
QUERY_CATCHUP = 256
# refresh() saves the graph once this many changes are not in the saved file (or
# a fraction of the rows, whichever is larger), and always when asked to.
SAVE_EVERY = 20000
SAVE_FRACTION = 0.1
# A graph with more deleted than this fraction of its entries is rebuilt by refresh().
MAX_DELETED_FRACTION = 0.25
# Search ef of the batch neighbours() behind duplicate finding (k + 1 if larger): at
# 100k rows recall@20 0.99 at twice the speed of the query ef.
NEIGHBOURS_EF = 32
# Candidates taken from the graph for the exact re-rank: k + this, at least 2k.
EXTRA_CANDIDATES = 10
SPACES = {"cosine": "cosine", "l2": "l2"}
SUFFIX = ".hnsw"


def eligible(spec) -> bool:
    return (hnswlib is not None and spec.element_type == "float"
            and spec.metric in SPACES and spec.dims >= 64)


# Less clustered vectors (hog, histogram, anything but cnn) need a wider search for
# recall@10 >= 0.98: hog at ef 48 gets 0.977 / 0.970 (rows / held-out), at 96 0.995 / 0.987.
EF_SEARCH_UNCLUSTERED = 96


def new_params(spec=None) -> dict:
    ef = EF_SEARCH if spec is None or spec.method == "cnn" else EF_SEARCH_UNCLUSTERED
    return {"library": "hnswlib", "uuid": uuidlib.uuid4().hex, "M": M,
            "ef_construction": EF_CONSTRUCTION, "ef": ef}


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


def database_file(conn, table: str) -> Optional[str]:
    """The file of the database (main or attached) that holds table; None in memory."""
    for _, schema, file in conn.execute("pragma database_list").fetchall():
        if conn.execute(f"select 1 from {quote_identifier(schema)}.sqlite_master "
                        "where name = ?", (table,)).fetchone():
            return file if file and file != MEMORY else None
    return None


def folder(db_file: str) -> Path:
    return Path(db_file + ".ann")


def saved_files(directory: Path, spec) -> list[tuple[int, int, Path]]:
    """(generation, deleted entries, path) of this index's saved graphs, newest first."""
    pattern = re.compile(re.escape(f"{spec.vec_table}.{spec.params['ann']['uuid']}.") + r"(\d+)-(\d+)"
                         + re.escape(SUFFIX) + "$")
    found = []
    try:
        for path in directory.iterdir():
            m = pattern.match(path.name)
            if m:
                found.append((int(m.group(1)), int(m.group(2)), path))
    except OSError:
        return []
    return sorted(found, reverse=True)


class Graph:
    """An hnswlib graph of one index and the generation it reflects."""

    def __init__(self, spec, capacity: int):
        params = spec.params["ann"]
        self.index = hnswlib.Index(space=SPACES[spec.metric], dim=spec.dims)
        self.index.init_index(max_elements=max(capacity, 1024), M=params.get("M", M),
                              ef_construction=params.get("ef_construction", EF_CONSTRUCTION))
        self.index.set_num_threads(1)
        self.ef = params.get("ef", EF_SEARCH)
        self.generation = 0
        self.saved_generation = -1
        self.deleted = 0
        self.lock = threading.RLock()

    @classmethod
    def load(cls, spec, path: Path, generation: int, deleted: int) -> "Graph":
        graph = cls.__new__(cls)
        graph.index = hnswlib.Index(space=SPACES[spec.metric], dim=spec.dims)
        graph.index.load_index(str(path), max_elements=0)
        graph.index.set_num_threads(1)
        graph.ef = spec.params["ann"].get("ef", EF_SEARCH)
        graph.generation = graph.saved_generation = generation
        graph.deleted = deleted
        graph.lock = threading.RLock()
        return graph

    @property
    def live(self) -> int:
        return self.index.element_count - self.deleted

    def add(self, item_ids: np.ndarray, vectors: np.ndarray, threads: int = 1) -> None:
        if not len(item_ids):
            return
        needed = self.index.element_count + len(item_ids)
        if needed > self.index.max_elements:
            self.index.resize_index(max(needed, int(self.index.max_elements * 1.5)))
        self.index.add_items(vectors, item_ids, num_threads=threads)

    def remove(self, item_id: int) -> None:
        try:
            self.index.mark_deleted(int(item_id))
            self.deleted += 1
        except RuntimeError:  # not in the graph, or already deleted
            pass

    def candidates(self, query: np.ndarray, n: int, allowed=None) -> list[int]:
        n = min(n, self.live)
        if n <= 0:
            return []
        filter_fn = None if allowed is None else allowed.__contains__
        try:
            with self.lock:  # searches and inserts of one graph take turns
                self.index.set_ef(max(self.ef, n))
                labels, _ = self.index.knn_query(query.reshape(1, -1), k=n, num_threads=1,
                                                 filter=filter_fn)
        except RuntimeError:  # fewer reachable than n (deletions, a selective filter)
            return self.candidates(query, n // 2, allowed) if n > 1 else []
        return labels[0].tolist()

    def get(self, item_ids: Sequence[int]) -> np.ndarray:
        return np.asarray(self.index.get_items(list(item_ids)), dtype=np.float32)

    def save(self, directory: Path, spec) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        final = directory / (f"{spec.vec_table}.{spec.params['ann']['uuid']}."
                             f"{self.generation}-{self.deleted}{SUFFIX}")
        temporary = directory / f".{final.name}.{os.getpid()}.{threading.get_ident()}.tmp"
        self.index.save_index(str(temporary))
        with open(temporary, "rb") as f:
            os.fsync(f.fileno())
        os.replace(temporary, final)
        try:
            fd = os.open(directory, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
        except OSError:
            pass
        self.saved_generation = self.generation
        for generation, _, path in saved_files(directory, spec):
            if generation < self.generation:  # older only: another writer may be ahead
                try:
                    path.unlink()
                except OSError:
                    pass
        return final


# (database file, vec table, uuid) -> Graph, shared by every connection of the process.
_graphs: dict[tuple, Graph] = {}
_lock = threading.Lock()


def _key(db_file: str, spec) -> tuple:
    return (os.path.realpath(db_file), spec.vec_table, spec.params["ann"]["uuid"])


def _count(conn, spec) -> int:
    return conn.execute(f"select count(*) from {quote_identifier(spec.vec_table)}").fetchone()[0]


def _apply(conn, spec, graph: Graph, upto: int, threads: int = 1) -> None:
    """Bring graph from its generation to `upto` with the log and the current rows.
    Re-applying a change is harmless (the row's present state is what is applied)."""
    changed = [i for (i,) in conn.execute(
        f"select distinct item_id from {quote_identifier(log_table(spec))} "
        "where generation > ? and generation <= ?", (graph.generation, upto))]
    table = quote_identifier(spec.vec_table)
    ids, vectors = [], []
    for start in range(0, len(changed), 500):
        batch = changed[start:start + 500]
        # vec0 answers "rowid = ?" from its rowid table, "rowid in (...)" with a scan.
        found = {i: row[0] for i in batch for row in conn.execute(
            f"select embedding from {table} where rowid = ?", (i,))}
        for item_id in batch:
            blob = found.get(item_id)
            if blob is None:
                graph.remove(item_id)
            else:
                ids.append(item_id)
                vectors.append(np.frombuffer(blob, dtype=np.float32))
    if ids:
        graph.add(np.array(ids, dtype=np.int64), np.stack(vectors), threads)
    graph.generation = upto


def graph_for_query(conn, spec) -> Optional[Graph]:
    """The process's graph of this index, brought up to the generation this connection
    sees; None when the caller must use the exact/pre-filter path instead."""
    if not spec.params.get("ann") or not eligible(spec):
        return None
    db_file = database_file(conn, spec.vec_table)
    if db_file is None:
        return None
    try:
        oldest, generation = log_bounds(conn, spec)
    except Exception:  # no log table (an index made before graphs)
        return None
    key = _key(db_file, spec)
    graph = _graphs.get(key)
    # A graph the log can no longer bring forward (pruned past it), or none: load the
    # newest usable saved file.
    if graph is None or (oldest and graph.generation < oldest - 1) or graph.generation > generation \
            or generation - graph.generation > QUERY_CATCHUP:
        graph = _load(conn, spec, db_file, key, oldest, generation, graph)
        if graph is None:
            return None
    if graph.generation == generation:
        return graph
    if conn.in_transaction or generation - graph.generation > QUERY_CATCHUP:
        return None  # changes not committed yet, or too many to apply in a query
    with graph.lock:
        if graph.generation < generation:
            _apply(conn, spec, graph, generation)
    return graph if graph.generation == generation else None


def _load(conn, spec, db_file, key, oldest, generation, current) -> Optional[Graph]:
    """The newest saved graph between what the log can catch up from and `generation`,
    if it is better than `current`; cached for the process."""
    for saved, deleted, path in saved_files(folder(db_file), spec):
        if saved > generation or (oldest and saved < oldest - 1):
            continue
        if current is not None and current.generation <= generation and saved <= current.generation:
            break
        try:
            graph = Graph.load(spec, path, saved, deleted)
        except (RuntimeError, OSError, ValueError):
            continue
        if conn.in_transaction or generation - saved > QUERY_CATCHUP:
            # Cannot check it against the rows now; keep it for refresh() to use.
            pass
        elif saved == generation and graph.live != _count(conn, spec):
            continue  # does not match the rows (a database restored from a backup)
        with _lock:
            _graphs[key] = graph
        return graph
    if current is not None and current.generation > generation:
        with _lock:
            _graphs.pop(key, None)  # ahead of the database: never usable
        return None
    return current


def refresh(conn, spec, save: Optional[bool] = None, rebuild: bool = False,
            threads: int = -1) -> dict:
    """Bring the graph up to the committed generation (building it if missing, stale
    beyond the log, or worn out by deletions), save it when due (always with save=True,
    never with save=False) and prune the log it covers. Call outside a transaction."""
    if not spec.params.get("ann") or not eligible(spec):
        return {"graph": False}
    if conn.in_transaction:
        raise RuntimeError("refresh the ANN graph after committing, outside a transaction")
    db_file = database_file(conn, spec.vec_table)
    if db_file is None:
        return {"graph": False}
    started = time.perf_counter()
    oldest, generation = log_bounds(conn, spec)
    key = _key(db_file, spec)
    graph = _graphs.get(key)
    rows = _count(conn, spec)
    if rows < MIN_ROWS:
        with _lock:
            _graphs.pop(key, None)
        return {"graph": False, "rows": rows}
    graph = _load(conn, spec, db_file, key, oldest, generation, graph)
    built = False
    if not (rebuild or graph is None or graph.generation > generation
            or (oldest and graph.generation < oldest - 1)):
        with graph.lock:
            # A snapshot: the generation and the rows read together.
            conn.execute("begin")
            try:
                _, generation = log_bounds(conn, spec)
                _apply(conn, spec, graph, generation, threads)
            finally:
                conn.execute("rollback")
        if graph.deleted > MAX_DELETED_FRACTION * max(graph.index.element_count, 1):
            rebuild = True  # worn out by deletions: a new graph is as fast and better
    if rebuild or graph is None or graph.generation > generation \
            or (oldest and graph.generation < oldest - 1):
        graph = build(conn, spec, threads)
        built = True
    with _lock:
        _graphs[key] = graph
    due = (graph.generation - max(graph.saved_generation, 0)
           >= max(SAVE_EVERY, SAVE_FRACTION * graph.live)) or graph.saved_generation < 0
    if save or (save is None and due and graph.saved_generation != graph.generation):
        directory = folder(db_file)
        try:
            with graph.lock:
                graph.save(directory, spec)
        except OSError:
            pass  # a read-only folder: the graph stays in this process only
        else:
            try:
                prune(conn, spec, graph.saved_generation)
            except Exception:  # a read-only database: the log just stays longer
                pass
    return {"graph": True, "built": built, "generation": graph.generation,
            "saved": graph.saved_generation, "rows": graph.live,
            "seconds": time.perf_counter() - started}


def build(conn, spec, threads: int = -1) -> Graph:
    """A new graph of every row, read in one snapshot with its generation."""
    conn.execute("begin")
    try:
        _, generation = log_bounds(conn, spec)
        rows = _count(conn, spec)
        graph = Graph(spec, int(rows * 1.1) + 1024)
        cursor = conn.execute(f"select rowid, embedding from {quote_identifier(spec.vec_table)}")
        while True:
            chunk = cursor.fetchmany(20000)
            if not chunk:
                break
            ids = np.fromiter((i for i, _ in chunk), dtype=np.int64, count=len(chunk))
            vectors = np.frombuffer(b"".join(b for _, b in chunk), dtype=np.float32).reshape(len(chunk), -1)
            graph.add(ids, vectors, threads)
    finally:
        conn.execute("rollback")
    graph.generation = generation
    return graph


def prune(conn, spec, upto: int) -> None:
    """Forget log rows a saved graph covers, but the newest (it holds the generation)."""
    with conn:
        conn.execute(f"delete from {quote_identifier(log_table(spec))} where generation <= ? "
                     f"and generation < (select max(generation) from "
                     f"{quote_identifier(log_table(spec))})", (upto,))


def forget(conn, spec) -> None:
    """Drop the process's graph and saved files of an index being dropped."""
    if not spec.params.get("ann"):
        return
    db_file = database_file(conn, spec.vec_table)
    if db_file is None:
        return
    with _lock:
        _graphs.pop(_key(db_file, spec), None)
    for _, _, path in saved_files(folder(db_file), spec):
        try:
            path.unlink()
        except OSError:
            pass


def clear_cache() -> None:
    """Forget every graph held in memory (tests; a process that wants its RAM back)."""
    with _lock:
        _graphs.clear()
