"""A derived HNSW graph (hnswlib) beside the index database, for sub-linear KNN.

SQLite stays the source of truth; the graph is never trusted beyond what it says:

- The change log (ann_log.py), written in the same transaction as the vectors, gives
  the index's generation; a graph records the generation it reflects (ann_graph.py).
- A graph in memory (one per process and index, shared by every connection and thread)
  answers a query as it is when it is current. When it is up to DELTA_ROWS changes
  behind the generation the query's connection sees, the changed rows (a Delta, read
  once per generation and cached) are searched exactly beside it and the removed ones
  dropped, so the answer covers every committed row; a query never changes the graph
  (only a batch user of the whole graph, duplicates' neighbours through
  GraphView.index, first applies its delta to it, under the graph's lock).
  Further behind, inside a write transaction (which may yet roll back), or with no
  graph at all, the caller falls back to the exact/pre-filter path.
- The graph is brought forward off the query and write paths: ``refresh_in_background``
  (the indexer, after each commit) wakes a thread of this process (ann_background.py)
  that applies the log a few changes at a time; a reader whose delta grows starts the
  same thread. ``refresh()`` (after a run) stops it, applies the
  rest on every core, rebuilds a graph missing or worn out by deletions, and saves it
  when readers would otherwise scan many rows exactly; the log the saved file covers
  is then pruned (its newest row is kept: it carries the generation).
- A process without the graph in memory loads the newest saved file whose generation it
  can still catch up from (the log holds every later change), and whose row count
  agrees with the database's.

Candidates from the graph (and the delta) are re-ranked by their exact distance read
from vec0, so distances (and order) are exactly the exact path's for whatever is returned.
"""
from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING, Optional

import numpy as np

from . import ann_graph, ann_links
from .ann_graph import (EF_CONSTRUCTION, EF_SEARCH, EF_SEARCH_UNCLUSTERED, M, Graph,  # noqa: F401
                        build, eligible, folder, new_params, saved_files)
from .ann_log import (Delta, create_log, database_file, drop_log, log_bounds, prune,  # noqa: F401
                      read_delta, record, row_count)

if TYPE_CHECKING:
    from .ann_background import Background

# Below this many rows the pre-filter answers in a few ms and no graph is kept.
MIN_ROWS = 5000
# Changes a query covers by an exact scan beside the graph (4096 x 1280-d: ~1 ms of
# numpy, read from vec0 once per generation); beyond, it uses the pre-filter.
DELTA_ROWS = 4096
# A reader whose delta holds more changes than this starts the background refresh.
DELTA_CATCHUP = 512
# refresh() saves when this many changes are not in the saved file (readers would scan
# them exactly), or when asked to; the background thread saves far less often (a save
# writes the whole graph: 5 GB at 1M cnn rows): every BACKGROUND_SAVE_EVERY changes or
# that fraction of the rows, whichever is larger.
SAVE_AFTER = DELTA_ROWS // 4
BACKGROUND_SAVE_EVERY = 20000
BACKGROUND_SAVE_FRACTION = 0.1
# A graph with more deleted than this fraction of its entries is rebuilt by refresh().
MAX_DELETED_FRACTION = 0.25
# Search ef of the batch neighbours() behind duplicate finding (k + 1 if larger): at
# 100k rows recall@20 0.99 at twice the speed of the query ef.
NEIGHBOURS_EF = 32
# Candidates taken from the graph for the exact re-rank: k + this, at least 2k.
EXTRA_CANDIDATES = 10
# The background thread applies this many changes per hold of the graph's lock (~1 ms
# each at 1M x 1280-d), so a query of the same process waits at most that long.
BACKGROUND_STEP = 32
# The thread ends after this long without a change to apply.
BACKGROUND_IDLE_SECONDS = 10.0

# (database file, vec table, uuid) -> Graph / Delta / Background, for the whole process.
_graphs: dict[tuple, Graph] = {}
_deltas: dict[tuple, Delta] = {}
_background: dict[tuple, "Background"] = {}
_lock = threading.Lock()


def _key(db_file: str, spec) -> tuple:
    return (os.path.realpath(db_file), spec.vec_table, spec.params["ann"]["uuid"])


def _stale(graph: Optional[Graph], oldest: int, generation: int, window: int) -> bool:
    """Whether a graph cannot serve `generation`: missing, ahead of it, pruned past (the
    log cannot bring it forward), or more than `window` changes behind."""
    return graph is None or graph.generation > generation \
        or bool(oldest and graph.generation < oldest - 1) or generation - graph.generation > window


class GraphView:
    """A graph and the committed changes it does not reflect yet (a Delta): what a query
    searches. Offers what callers of a Graph use (candidates, lock, live, index)."""

    def __init__(self, graph: Graph, delta: Delta):
        self.graph, self.delta = graph, delta
        self.lock = graph.lock
        self.ef = graph.ef

    def candidates(self, query: np.ndarray, n: int, allowed=None) -> list[int]:
        # Removed rows the graph still holds may take places among its n: ask for more.
        found = self.graph.candidates(query, n + min(len(self.delta.gone), n), allowed)
        seen = set(found)
        return found + [i for i in self.delta.nearest(query, n, allowed) if i not in seen]

    @property
    def live(self) -> int:
        return self.caught_up().live

    @property
    def index(self):
        """The hnswlib index, for batch users (duplicates' neighbours) that query it
        directly: it must hold every row, so the delta is applied to it first."""
        return self.caught_up().index

    def caught_up(self) -> Graph:
        graph, delta = self.graph, self.delta
        with graph.lock:
            if graph.generation < delta.upto:
                for item_id in delta.gone:
                    graph.remove(item_id)
                graph.add(delta.ids, delta.vectors)
                graph.generation = delta.upto
        return graph


def graph_for_query(conn, spec):
    """What a query of this connection searches: the process's graph of this index if it
    reflects the generation the connection sees, a GraphView of it and the changes since
    if there are at most DELTA_ROWS; None when the caller must use the exact/pre-filter
    path instead."""
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
    if graph is not None and graph.generation > generation and not conn.in_transaction:
        # Brought forward (by this process's background thread) after the log was read.
        oldest, generation = log_bounds(conn, spec)
    if _stale(graph, oldest, generation, DELTA_ROWS):
        graph = _load(conn, spec, db_file, key, oldest, generation, graph)
        if graph is None:
            return None
        if _stale(graph, oldest, generation, DELTA_ROWS):
            if not _stale(graph, oldest, generation, window=generation):
                refresh_in_background(conn, spec, save=False)  # only too far behind
            return None
    base = graph.generation
    if base == generation:
        return graph
    if conn.in_transaction:
        return None  # changes not committed yet: never searched beside the graph
    delta = _delta(conn, spec, key, base, generation)
    if delta.changed > DELTA_CATCHUP:
        refresh_in_background(conn, spec, save=False)
    return GraphView(graph, delta)


def batch_search(graph, spec, vectors: np.ndarray, k: int, ef: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(labels int64 (n, k), distances in the metric's units (n, k)) of each vector's k
    nearest in a graph (or GraphView, which applies its delta first), on every core."""
    with graph.lock:
        index = graph.index
        index.set_ef(max(ef, k))
        labels, distances = index.knn_query(vectors, k=k, num_threads=ann_graph.cores())
    if spec.metric == "l2":  # hnswlib's l2 space gives squared distances
        distances = np.sqrt(np.maximum(distances, 0))
    return labels.astype(np.int64), distances


def linked_pairs(conn, spec, bound: float, k: int):
    """(item ids a, b, distances) of rows within bound that the graph links directly
    (ann_links.py: enough to join every group the bound joins), each pair once or
    twice; the rows changed since the saved file, and those the file links poorly, by a
    search for their few nearest (at most k: ann_links.SEARCH_NEAREST, at SEARCH_EF).
    None when no saved graph serves (the caller searches every row instead)."""
    found = ann_links.saved_pairs(conn, spec, bound)
    if found is None:
        return None
    a, b, d = [found.a], [found.b], [found.distances]
    if not found.searches:
        return found.a, found.b, found.distances
    graph = graph_for_query(conn, spec)
    if graph is None:
        return None
    wanted = min(min(k, ann_links.SEARCH_NEAREST) + 1, graph.live)
    for ids, vectors in found.to_search():
        # A batch at a time: queries of other requests go between.
        labels, near = batch_search(graph, spec, vectors, wanted, ann_links.SEARCH_EF)
        rows, cols = np.nonzero((near <= bound + 1e-6) & (labels != ids[:, None]))
        a.append(ids[rows])
        b.append(labels[rows, cols])
        d.append(near[rows, cols])
    return np.concatenate(a), np.concatenate(b), np.concatenate(d)


def _delta(conn, spec, key, base: int, generation: int) -> Delta:
    """The changes after a graph at `base` up to `generation`. A cached delta from an
    older base serves too (a graph that has since taken in some of its changes is
    searched beside all of them: the union is still every row), and is extended with
    the rows changed since; once the graph has moved on by DELTA_CATCHUP it is read
    afresh from the graph's generation, smaller."""
    cached = _deltas.get(key)
    reusable = cached is not None and cached.base <= base and cached.upto <= generation \
        and base - cached.base <= DELTA_CATCHUP
    if reusable and cached.upto == generation:
        return cached
    delta = read_delta(conn, spec, cached.base if reusable else base, generation,
                       cached if reusable else None)
    with _lock:
        current = _deltas.get(key)
        if current is None or current.upto < generation or current.base < delta.base:
            _deltas[key] = delta
    return delta


def _load(conn, spec, db_file, key, oldest, generation, current) -> Optional[Graph]:
    """The newest saved graph between what the log can catch up from and `generation`,
    if it is better than `current`; cached for the process."""
    if current is not None and current.generation > generation:
        if conn.in_transaction:
            return None  # a snapshot older than the graph: not for it, but keep the graph
        with _lock:
            _graphs.pop(key, None)  # ahead of the database (one restored from a backup)
        current = None
    for saved, deleted, path in saved_files(folder(db_file), spec):
        if saved > generation or (oldest and saved < oldest - 1):
            continue
        if current is not None and saved <= current.generation:
            break
        try:
            graph = Graph.load(spec, path, saved, deleted)
        except (RuntimeError, OSError, ValueError):
            continue
        if saved == generation and not conn.in_transaction and graph.live != row_count(conn, spec):
            continue  # does not match the rows (a database restored from a backup)
        with _lock:
            _graphs[key] = graph
        return graph
    return current


def refresh(conn, spec, save: Optional[bool] = None, rebuild: bool = False,
            threads: int = -1) -> dict:
    """Bring the graph up to the committed generation now (building it if missing,
    stale beyond the log, or worn out by deletions), save it when due (SAVE_AFTER
    unsaved changes; always with save=True, never with save=False) and prune the log
    it covers. Stops this index's background refresh first. Outside a transaction."""
    if not spec.params.get("ann") or not eligible(spec):
        return {"graph": False}
    if conn.in_transaction:
        raise RuntimeError("refresh the ANN graph after committing, outside a transaction")
    db_file = database_file(conn, spec.vec_table)
    if db_file is None:
        return {"graph": False}
    started = time.perf_counter()
    key = _key(db_file, spec)
    stop_background(key)
    oldest, generation = log_bounds(conn, spec)
    rows = row_count(conn, spec)
    if rows < MIN_ROWS:
        with _lock:
            _graphs.pop(key, None)
        return {"graph": False, "rows": rows}
    graph = _load(conn, spec, db_file, key, oldest, generation, _graphs.get(key))
    built = False
    if not (rebuild or _stale(graph, oldest, generation, window=generation)):
        with graph.lock:
            conn.execute("begin")  # a snapshot: the generation and the rows read together
            try:
                _, generation = log_bounds(conn, spec)
                ann_graph.apply_changes(conn, spec, graph, generation, threads)
            finally:
                conn.execute("rollback")
        if graph.deleted > MAX_DELETED_FRACTION * max(graph.index.element_count, 1):
            rebuild = True  # worn out by deletions: a new graph is as fast and better
    if rebuild or _stale(graph, oldest, generation, window=generation):
        graph = build(conn, spec, threads)
        built = True
    with _lock:
        _graphs[key] = graph
    unsaved = graph.generation - max(graph.saved_generation, 0)
    if save or (save is None and graph.saved_generation != graph.generation
                and (graph.saved_generation < 0 or unsaved >= SAVE_AFTER)):
        _save(conn, spec, graph, db_file)
    elif oldest and oldest < graph.saved_generation:
        _prune(conn, spec, graph.saved_generation)  # a file the background thread saved
    return {"graph": True, "built": built, "generation": graph.generation,
            "saved": graph.saved_generation, "rows": graph.live,
            "seconds": time.perf_counter() - started}


def _save(conn, spec, graph: Graph, db_file: str) -> None:
    try:
        with graph.lock:
            graph.save(folder(db_file), spec)
    except OSError:
        return  # a read-only folder: the graph stays in this process only
    if conn is not None:
        _prune(conn, spec, graph.saved_generation)


def _prune(conn, spec, upto: int) -> None:
    try:
        prune(conn, spec, upto)
    except Exception:  # a read-only database: the log just stays longer
        pass


def refresh_in_background(conn, spec, save: bool = True) -> dict:
    """Wake (or start) this process's background refresh of the index's graph and
    return at once: the writer never waits for the graph. With save, the thread also
    saves the graph now and then (BACKGROUND_SAVE_EVERY); readers pass save=False."""
    if not spec.params.get("ann") or not eligible(spec):
        return {"graph": False}
    db_file = database_file(conn, spec.vec_table)
    if db_file is None:
        return {"graph": False}
    from .ann_background import Background  # it uses this module's cache and helpers

    key = _key(db_file, spec)
    with _lock:
        worker = _background.get(key)
        if worker is None or worker.finished:
            worker = _background[key] = Background(key, db_file, spec, save)
            worker.thread.start()
        worker.save = worker.save or save
        worker.wake.set()
    return {"graph": True, "background": True}


def stop_refresh(conn, spec) -> None:
    """Stop this process's background refresh of an index, if it has one."""
    if spec.params.get("ann") and eligible(spec):
        db_file = database_file(conn, spec.vec_table)
        if db_file is not None:
            stop_background(_key(db_file, spec))


def stop_background(key: Optional[tuple] = None) -> None:
    """Stop the background refresh of one index (every index without a key) and wait
    for it: it ends after the step it is in."""
    with _lock:
        workers = [w for k, w in _background.items() if key is None or k == key]
    for worker in workers:
        worker.stop.set()
        worker.wake.set()
        worker.thread.join()
        with _lock:
            if _background.get(worker.key) is worker:
                del _background[worker.key]


def forget(conn, spec) -> None:
    """Drop the process's graph and saved files of an index being dropped."""
    if not spec.params.get("ann"):
        return
    db_file = database_file(conn, spec.vec_table)
    if db_file is None:
        return
    key = _key(db_file, spec)
    stop_background(key)
    with _lock:
        _graphs.pop(key, None)
        _deltas.pop(key, None)
    ann_graph.remove_files(folder(db_file), spec)


def clear_cache() -> None:
    """Forget every graph held in memory (tests; a process that wants its RAM back)."""
    stop_background()
    with _lock:
        _graphs.clear()
        _deltas.clear()
