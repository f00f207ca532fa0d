"""The incremental, resumable, parallel indexing pipeline: source rows -> pixels -> vectors -> store."""
from __future__ import annotations

import collections
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from . import procs
from .images import ImageError, _shown, load_image
from .methods.base import Method
from .plugins import get_method
from .source import SourceTable, fingerprint, iter_rows
from .store import IndexSpec, ItemResult, Store

# Rows are written in transactions of at most this many rows or this many seconds,
# so a killed run loses at most one batch and readers never see half of one.
WRITE_ROWS = 256
WRITE_SECONDS = 2.0
# More worker processes than this only add memory (each holds its methods' models,
# ~350 MB for cnn): --workers is capped at twice the cores, and at MAX_WORKERS.
MAX_WORKERS = 32
# Each commit wakes a background refresh of the indexes' HNSW graphs (store/ann.py);
# False leaves all of it to the end of the run (bench/ann_speed.py compares the two).
BACKGROUND_REFRESH = True
CRASHED = ("the decoder crashed on this image (its worker process died: out of memory, "
           "or a bug in a decoding library)")


def worker_cap(requested: int) -> int:
    """The number of worker processes a run uses for `requested` (see MAX_WORKERS)."""
    return max(1, min(int(requested), 2 * (os.cpu_count() or 1), MAX_WORKERS))


@dataclass
class Summary:
    indexed: int = 0
    unchanged: int = 0
    removed: int = 0
    failed: int = 0
    empty: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    errors: list = field(default_factory=list)  # (pk, message), first few
    notes: list = field(default_factory=list)  # what the user should know beyond errors

    @property
    def rate(self) -> float:
        return self.indexed / self.seconds if self.seconds else 0.0


@dataclass
class Task:
    pk: Any
    source: Any  # bytes or a path
    fingerprint: str
    index_ids: tuple  # which indexes need this row


def extract_chunk(tasks: Sequence[Task], jobs: Sequence[tuple[int, Method, str, Optional[int]]]) -> list:
    """Worker side: decode each image once at the size its methods need, then run each
    method (at the embedding version its index was built with) over the batch.
    Returns [(pk, fingerprint, {index_id: (vector, labels) | error})]."""
    methods = {index_id: (method, metric, version) for index_id, method, metric, version in jobs}
    out = []
    pixels: list[Optional[np.ndarray]] = []
    for task in tasks:
        min_size = max(methods[i][0].min_size for i in task.index_ids)
        try:
            if task.fingerprint == "missing":
                raise ImageError(f"file not found: {_shown(task.source)}")
            pixels.append(load_image(task.source, min_size))
            out.append((task.pk, task.fingerprint, {}))
        except ImageError as e:
            pixels.append(None)
            out.append((task.pk, task.fingerprint, {i: str(e) for i in task.index_ids}))
        except Exception as e:  # a decoder bug must cost one row, not the run
            pixels.append(None)
            out.append((task.pk, task.fingerprint,
                        {i: f"cannot read image: {e.__class__.__name__}: {e}" for i in task.index_ids}))
    for index_id, (method, metric, version) in methods.items():
        wanted = [n for n, t in enumerate(tasks) if index_id in t.index_ids and pixels[n] is not None]
        images = [pixels[n] for n in wanted]
        for n, result in zip(wanted, _run_method(method, metric, version, images)):
            out[n][2][index_id] = result
    return out


def _run_method(method: Method, metric: str, version: Optional[int], images: list) -> list:
    if not images:
        return []
    try:
        return _extract(method, metric, version, images)
    except Exception as e:
        if len(images) > 1:
            # One bad image must not fail its batch: retry one at a time.
            return [r for image in images for r in _run_method(method, metric, version, [image])]
        return [f"{method.name} failed: {e.__class__.__name__}: {e}"]


def _extract(method: Method, metric: str, version: Optional[int], images: list) -> list:
    features = method.extractor(version)(images)
    vectors = method.vectors_for(features.vectors, metric)
    labels = features.labels or [None] * len(images)
    if len(vectors) != len(images):
        raise ValueError(f"returned {len(vectors)} vectors for {len(images)} images")
    return [(vector, label) for vector, label in zip(vectors, labels)]


def _init_worker(owner_pid: Optional[int] = None):
    procs.init_worker(owner_pid or 0)


# Start workers without the parent's __main__ script (procs.without_main_script).
workers_skip_main_script = procs.without_main_script


class Indexer:
    def __init__(self, source_conn, store: Store, source: SourceTable, root: str,
                 specs: Sequence[IndexSpec], workers: int = 0,
                 progress: Optional[Callable[[int], None]] = None):
        self.source_conn = source_conn
        self.store = store
        self.source = source
        self.root = root
        self.specs = {spec.id: spec for spec in specs}
        self.workers = worker_cap(workers or os.cpu_count() or 1)
        self.progress = progress or (lambda n: None)
        methods = [get_method(spec.method) for spec in specs]
        self.chunk_size = max([m.batch_size for m in methods] + [8])
        # Methods travel to workers pickled (their functions by reference), so methods a
        # plugin registered at run time work in fresh worker processes too.
        self.jobs = tuple((spec.id, method, spec.metric, spec.params.get("embedding_version"))
                          for spec, method in zip(specs, methods))

    def run(self) -> Summary:
        summary = Summary()
        started = time.monotonic()
        known = {spec_id: self.store.fingerprints(spec) for spec_id, spec in self.specs.items()}
        seen: set = set()
        pending: list[tuple] = []
        last_write = [time.monotonic()]

        def flush(force=False):
            if not pending or (not force and len(pending) < WRITE_ROWS
                               and time.monotonic() - last_write[0] < WRITE_SECONDS):
                return
            self._write(pending, summary)
            pending.clear()
            last_write[0] = time.monotonic()

        def collect(chunk_result):
            pending.extend(chunk_result)
            self.progress(len(chunk_result))
            flush()

        self.executor = self._executor()
        in_flight: collections.deque[Future] = collections.deque()
        chunk_of: dict = {}
        chunk: list[Task] = []

        def crashed(tasks):
            collect([(t.pk, t.fingerprint, {i: CRASHED for i in t.index_ids}) for t in tasks])

        def recover(broken: list):
            """A worker died (a decoder crash, the OOM killer): every chunk in flight
            failed with it. A fresh pool runs each of their images alone, one at a time,
            so the image that kills its worker is recorded as an error and only it."""
            for future in in_flight:
                broken.append(chunk_of.pop(future))
            in_flight.clear()
            for tasks in broken:
                for task in tasks:
                    self._restart()
                    try:
                        collect(self.executor.submit(extract_chunk, [task], self.jobs).result())
                    except BrokenProcessPool:
                        crashed([task])
            self._restart()

        def settle(done):
            broken = []
            for future in [f for f in in_flight if f in done]:
                in_flight.remove(future)
                tasks = chunk_of.pop(future)
                try:
                    collect(future.result())
                except BrokenProcessPool:
                    broken.append(tasks)
            if broken:
                recover(broken)

        def submit(tasks):
            if self.executor is None:
                collect(extract_chunk(tasks, self.jobs))
                return
            try:
                future = self.executor.submit(extract_chunk, tasks, self.jobs)
            except BrokenProcessPool:
                recover([tasks])
                return
            chunk_of[future] = tasks
            in_flight.append(future)
            # Bounded read-ahead: memory stays flat however large the table.
            while len(in_flight) >= self.workers * 3:
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                settle(done)

        try:
            for pk, value in iter_rows(self.source_conn, self.source):
                try:
                    print_, source = fingerprint(value, self.root)
                except ImageError as e:  # a value no file or image can come from
                    seen.add(pk)
                    pending.append((pk, "invalid", {i: str(e) for i in self.specs}))
                    self.progress(1)
                    flush()
                    continue
                if print_ is None:
                    # No image (NULL or empty): a vector it had before is removed below.
                    summary.empty += 1
                    self.progress(1)
                    continue
                seen.add(pk)
                needs = tuple(i for i in self.specs if known[i].get(pk) != print_)
                if not needs:
                    summary.unchanged += 1
                    self.progress(1)
                    continue
                chunk.append(Task(pk, source, print_, needs))
                if len(chunk) >= self.chunk_size:
                    submit(chunk)
                    chunk = []
            if chunk:
                submit(chunk)
            while in_flight:
                settle(wait(in_flight)[0])
            flush(force=True)
            summary.removed = self._remove_missing(known, seen)
            self._refresh_graphs(summary)
        except KeyboardInterrupt:
            summary.interrupted = True
            for future in in_flight:
                future.cancel()
            for future in in_flight:
                if future.done() and not future.cancelled() and future.exception() is None:
                    pending.extend(future.result())
            flush(force=True)
        finally:
            if self.executor is not None:
                self.executor.shutdown(wait=not summary.interrupted, cancel_futures=True)
            self._stop_graph_refresh()
        summary.seconds = time.monotonic() - started
        return summary

    def _refresh_graphs(self, summary: Summary) -> None:
        """Bring each large index's HNSW graph (store/ann.py) up to the rows just written
        and save it when due: what the background refresh has not applied yet, on every
        core. Queries never depend on it (they cover what the graph lacks exactly)."""
        for spec in self.specs.values():
            try:
                self.store.refresh_ann(spec)
            except Exception as e:  # a derived structure: the index itself is complete
                summary.notes.append(f"{spec.method}: search graph not refreshed ({e}); "
                                     "queries use the exact pre-filter")

    def _refresh_graphs_in_background(self) -> None:
        """After a commit: wake the thread that applies it to the graph, and go on. In
        line, the refresh cost the writer more than the batch's own write (256 cnn rows
        at 10k: 0.17 s against 0.07 s); woken, it costs the writer well under 1 % of it,
        and the run's end applies what the thread has not."""
        if not BACKGROUND_REFRESH:
            return
        for spec in self.specs.values():
            try:
                self.store.refresh_ann(spec, background=True)
            except Exception:  # the end of the run refreshes (and reports) anyway
                pass

    def _stop_graph_refresh(self) -> None:
        """No refresh thread outlives the run (an interrupted one included)."""
        from .store import ann

        for spec in self.specs.values():
            ann.stop_refresh(self.store.conn, spec)

    def _restart(self) -> None:
        """A fresh pool in place of a broken one (a no-op while the pool works)."""
        if self.executor is not None and getattr(self.executor, "_broken", False):
            self.executor.shutdown(wait=False, cancel_futures=True)
            self.executor = self._executor()

    def _executor(self):
        if self.workers <= 1:
            return None
        return procs.process_pool(self.workers, _init_worker, (os.getpid(),),
                                  ("datasette_imgsim.indexer",))

    def _write(self, rows: list, summary: Summary) -> None:
        by_index: dict[int, list[ItemResult]] = collections.defaultdict(list)
        for pk, print_, results in rows:
            failed = False
            for index_id, result in results.items():
                if isinstance(result, str):
                    if not failed and len(summary.errors) < 20:
                        summary.errors.append((pk, result))
                    failed = True
                    by_index[index_id].append(ItemResult(pk, print_, error=result))
                else:
                    vector, labels = result
                    by_index[index_id].append(ItemResult(pk, print_, vector, labels))
            if failed:
                summary.failed += 1
            else:
                summary.indexed += 1
        with self.store.conn:
            for index_id, results in by_index.items():
                self.store.write(self.specs[index_id], results)
                self.store.touch(self.specs[index_id])
        self._refresh_graphs_in_background()

    def _remove_missing(self, known: dict, seen: set) -> int:
        removed = set()
        with self.store.conn:
            for index_id, prints in known.items():
                gone = [pk for pk in prints if pk not in seen]
                self.store.delete(self.specs[index_id], gone)
                removed.update(gone)
        return len(removed)
