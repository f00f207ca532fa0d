"""The background refresh of one index's HNSW graph (see ann.py): a thread of its own
that brings this process's graph forward from the change log a few changes at a time,
so that neither the writer nor a query waits for it (hnswlib inserts without the GIL).

It reads through a read-only connection of its own, in snapshots, and so only ever
applies committed changes; queries meanwhile search the graph beside the delta of what
it has not applied yet (ann.GraphView), so what they answer never depends on how far
it has got. A kill -9 loses nothing but its progress: the graph is derived.
"""
from __future__ import annotations

import threading
import time

from . import ann, ann_graph
from .ann_log import log_bounds
from .connection import connect

class Background:
    """One index's refresh thread: started by ann.refresh_in_background, woken after each
    commit, ended by ann.stop_background or after BACKGROUND_IDLE_SECONDS idle."""

    def __init__(self, key: tuple, db_file: str, spec, save: bool):
        self.key, self.db_file, self.spec, self.save = key, db_file, spec, save
        self.wake = threading.Event()
        self.stop = threading.Event()
        self.finished = False
        self.applied = 0  # changes brought into the graph
        self.busy_seconds = 0.0
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name=f"imgsim-graph-{spec.vec_table}")

    def _run(self) -> None:
        # At the process's own CPU priority: at a lower one (nice 19) the thread, starved
        # under load while it held the GIL for its few Python steps, made the writer wait
        # for the GIL (up to 1.5 s per commit, bench/ann_speed.py); at the same one it
        # takes its share of the CPU for the inserts the end of the run would otherwise do.
        conn = None
        try:
            conn = connect(self.db_file, readonly=True)
            while not self.stop.is_set():
                started = time.perf_counter()
                progressed = self.step(conn)
                self.busy_seconds += time.perf_counter() - started
                if progressed:
                    continue
                if not self.wake.wait(ann.BACKGROUND_IDLE_SECONDS):
                    with ann._lock:  # a wake-up from now on starts a new thread
                        if not self.wake.is_set():
                            self.finished = True
                            return
                self.wake.clear()
        except Exception as e:  # a derived structure: the next refresh() starts over
            self.error = f"{e.__class__.__name__}: {e}"
        finally:
            self.finished = True
            if conn is not None:
                conn.close()

    def step(self, conn) -> bool:
        """Do one bounded piece of work; False when there was nothing to do."""
        spec, key = self.spec, self.key
        oldest, generation = log_bounds(conn, spec)
        graph = ann._graphs.get(key)
        if ann._stale(graph, oldest, generation, window=generation):
            graph = ann._load(conn, spec, self.db_file, key, oldest, generation, graph)
        if ann._stale(graph, oldest, generation, window=generation):
            # No usable graph: building one is the end of the run's work, on every core
            # (a build here would hold one read snapshot for its whole length, and the
            # WAL could not be checkpointed meanwhile).
            return False
        with graph.lock:
            # Read under the lock: a query's GraphView.caught_up may have moved it on.
            if graph.generation >= generation:
                return False
            upto = min(generation, graph.generation + ann.BACKGROUND_STEP)
            conn.execute("begin")
            try:
                self.applied += ann_graph.apply_changes(conn, spec, graph, upto)
            finally:
                conn.execute("rollback")
        self._save_when_due(graph)
        return True

    def _save_when_due(self, graph) -> None:
        unsaved = graph.generation - max(graph.saved_generation, 0)
        due = graph.saved_generation < 0 or unsaved >= max(
            ann.BACKGROUND_SAVE_EVERY, ann.BACKGROUND_SAVE_FRACTION * graph.live)
        if self.save and due and graph.saved_generation != graph.generation:
            # No prune: this connection is read-only; the next refresh() prunes.
            ann._save(None, self.spec, graph, self.db_file)
