"""copies.decide in worker processes, one candidate component per task: each worker
opens the index itself (read-only) and reads the images it needs, so no pixels cross
process boundaries, and dies with the process that started it (procs.py)."""
from __future__ import annotations

import os
from concurrent.futures import as_completed
from typing import Iterator, Optional

from . import copies, procs

_worker: dict = {}


def _init(opener: tuple, table: str, method: str, roots: list, owner_pid: int) -> None:
    procs.init_worker(owner_pid)
    from .api import ImageIndex
    from .finder import row_loader

    database, index_db = opener
    images = ImageIndex.open(database, index_db)
    spec = images.index(table, method)
    _worker.update(images=images, load=row_loader(images.source, spec, roots))


def _decide(part: copies.Component, deadline: Optional[float]) -> copies.Decided:
    return copies.decide(part, copies.Images(_worker["load"]), deadline)


def decide_in_workers(parts: list, opener: tuple, spec, roots: list, workers: int,
                      deadline: Optional[float]) -> Iterator[copies.Decided]:
    """Decided components, as they finish. deadline: time.monotonic() value (the same
    clock in every process of one machine)."""
    # Largest first: the last task to finish should be a small one.
    parts = sorted(parts, key=lambda p: -len(p.pairs))
    with procs.process_pool(workers, _init, (opener, spec.table, spec.method, roots,
                                             os.getpid())) as pool:
        with procs.without_main_script():
            futures = [pool.submit(_decide, part, deadline) for part in parts]
        for future in as_completed(futures):
            yield future.result()
