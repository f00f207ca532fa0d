"""The hnswlib graph of one index, its files beside the index database, and how it is
built from, and brought forward with, the vec0 rows (ann_log.py says which changed).

A graph is saved as ``<index db>.ann/<vec_table>.<uuid>.<generation>-<deleted>.hnsw``:
written under a temporary name, fsynced, then renamed, so a reader (or a kill -9) sees
a whole file or none; the generation in its name says which state it reflects.
"""
from __future__ import annotations

import os
import re
import threading
import uuid as uuidlib
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from . import ann_log
from .connection import quote_identifier

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
# Less clustered vectors (hog, histogram, anything but cnn) need a wider search for
# recall@10 >= 0.98: hog at ef 48 gets 0.977 / 0.970 (rows / held-out), at 96 0.995 / 0.987.
EF_SEARCH_UNCLUSTERED = 96
SPACES = {"cosine": "cosine", "l2": "l2"}
SUFFIX = ".hnsw"
# Rows read from vec0 (and added to the graph on every core) per step of a build.
BUILD_CHUNK = 20000
# Rows added at once from which the graph is built on every core. hnswlib's parallel
# insertion makes a different graph each time; below this a build stays on one thread
# and comes out the same every time (a few seconds), and so do the answers.
PARALLEL_ADD = BUILD_CHUNK


def eligible(spec) -> bool:
    return (hnswlib is not None and spec.element_type == "float"
            and spec.metric in SPACES and spec.dims >= 64)


def new_params(spec=None) -> dict:
    ef = EF_SEARCH if spec is None or spec.method == "cnn" else EF_SEARCH_UNCLUSTERED
    return {"library": "hnswlib", "uuid": uuidlib.uuid4().hex, "M": M,
            "ef_construction": EF_CONSTRUCTION, "ef": ef}


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


def remove_files(directory: Path, spec, older_than: Optional[int] = None) -> None:
    for generation, _, path in saved_files(directory, spec):
        if older_than is None or generation < older_than:
            try:
                path.unlink()
            except OSError:
                pass


def cores(threads: int = -1) -> int:
    """threads, or for threads <= 0 the cores this process may run on. hnswlib reads -1
    as the index's own default, which Graph sets to 1 for single queries: a build or a
    batch search passed -1 ran on one core."""
    if threads > 0:
        return threads
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Graph:
    """An hnswlib graph of one index and the generation it reflects. Searches and
    changes take turns on `lock`."""

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
        """threads <= 0: every core (cores()) for PARALLEL_ADD rows or more, else one."""
        if not len(item_ids):
            return
        if self.deleted:
            self._count_returning(item_ids)
        needed = self.index.element_count + len(item_ids)
        if needed > self.index.max_elements:
            self.index.resize_index(max(needed, int(self.index.max_elements * 1.5)))
        if threads <= 0 and len(item_ids) < PARALLEL_ADD:
            threads = 1
        self.index.add_items(vectors, item_ids, num_threads=cores(threads))

    def _count_returning(self, item_ids: np.ndarray) -> None:
        """Item ids removed from the graph that come back (SQLite reuses the largest
        one): hnswlib revives them on add, so they count as live again. Without this
        the count drifts, and a saved file no longer matches the rows it reflects."""
        for item_id in item_ids.tolist():
            try:
                self.index.unmark_deleted(int(item_id))
                self.deleted -= 1
            except RuntimeError:  # not in the graph, or not deleted
                pass

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
            with self.lock:
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
        remove_files(directory, spec, older_than=self.generation)  # another writer may be ahead
        return final


def apply_changes(conn, spec, graph: Graph, upto: int, threads: int = 1) -> int:
    """Bring graph from its generation to `upto` with the log and the current rows; the
    number of generations brought in. Re-applying a change is harmless (the row's present
    state is what is applied). A graph already at or past `upto` (brought forward since
    the caller read it: GraphView.caught_up) is left alone: its generation never goes
    back. Call with graph.lock held, inside a read snapshot."""
    if upto <= graph.generation:
        return 0
    changed = ann_log.changed_ids(conn, spec, graph.generation, upto)
    for start in range(0, len(changed), 500):
        ids, vectors, gone = ann_log.read_rows(conn, spec, changed[start:start + 500])
        for item_id in gone:
            graph.remove(item_id)
        graph.add(ids, vectors, threads)
    applied, graph.generation = upto - graph.generation, upto
    return applied


def build(conn, spec, threads: int = -1) -> Graph:
    """A new graph of every row, read in one snapshot with its generation."""
    conn.execute("begin")
    try:
        _, generation = ann_log.log_bounds(conn, spec)
        rows = ann_log.row_count(conn, spec)
        graph = Graph(spec, int(rows * 1.1) + 1024)
        cursor = conn.execute(f"select rowid, embedding from {quote_identifier(spec.vec_table)}")
        while True:
            rows_read = cursor.fetchmany(BUILD_CHUNK)
            if not rows_read:
                break
            ids = np.fromiter((i for i, _ in rows_read), dtype=np.int64, count=len(rows_read))
            vectors = np.frombuffer(b"".join(b for _, b in rows_read),
                                    dtype=np.float32).reshape(len(rows_read), -1)
            graph.add(ids, vectors, threads)
    finally:
        conn.execute("rollback")
    graph.generation = generation
    return graph
