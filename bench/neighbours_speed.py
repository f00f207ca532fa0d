"""The batch k-nearest-neighbour graph duplicate finding starts from: Store.neighbours()
through the HNSW graph kept beside the index, against the exact answer.

    python bench/query_speed.py --sizes 100000       # first: builds the index and its graph
    python bench/neighbours_speed.py --size 100000 [--k 20] [--sample 2000]

Times Store.neighbours(spec, k) (every row's k nearest others: graph queries on every
core, exact distances in numpy) on bench/query_speed.py's cached index, and its recall
of each row's k exact nearest on --sample random rows (exact by numpy).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import CACHE, machine  # noqa: E402

from datasette_imgsim.store import Store, connect  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--sample", type=int, default=2000)
    args = parser.parse_args(argv)
    path = CACHE / f"query_{args.size}.db"
    store = Store(connect(str(path)))
    spec = store.index("photos", "cnn")
    t0 = time.monotonic()
    store.refresh_ann(spec)
    load_s = time.monotonic() - t0
    t0 = time.monotonic()
    pks, positions, dist = store.neighbours(spec, args.k)
    graph_s = time.monotonic() - t0
    _, X = store.load_vectors(spec)
    rng = np.random.default_rng(0)
    hits = []
    for row in rng.choice(len(pks), args.sample, replace=False):
        d = 1 - X @ X[row]
        d[row] = np.inf
        exact = set(np.argpartition(d, args.k)[:args.k].tolist())
        hits.append(len(exact & set(positions[row].tolist())) / args.k)
    # Incremental refresh: a committed batch (the indexer commits 256 rows at a time;
    # bench/query_speed.py writes 4096), then the graph brought up to it.
    from datasette_imgsim.store import ItemResult

    refresh = []
    for size in (256, 4096):
        extra = X[:size] + 0.01 * rng.standard_normal((size, X.shape[1])).astype(np.float32)
        extra /= np.linalg.norm(extra, axis=1, keepdims=True)
        base = 10_000_000
        t0 = time.monotonic()
        with store.conn:
            store.write(spec, [ItemResult(base + j, "b", v) for j, v in enumerate(extra)])
        write_s = time.monotonic() - t0
        t0 = time.monotonic()
        store.refresh_ann(spec, save=False)
        refresh_s = time.monotonic() - t0
        refresh.append(f"batch of {size}: write {write_s:.2f} s, graph refresh {refresh_s:.2f} s "
                       f"({refresh_s / write_s:.0%} of the write)")
        with store.conn:
            store.delete(spec, range(base, base + size))
        store.refresh_ann(spec, save=False)
    print(f"Machine: {machine()}")
    print("\n".join(refresh))
    print(f"{len(pks):,} rows, k={args.k}: graph load/refresh {load_s:.1f} s, "
          f"neighbours {graph_s:.1f} s ({len(pks) / graph_s:,.0f} rows/s), "
          f"recall@{args.k} {np.mean(hits):.3f} on {args.sample} rows")


if __name__ == "__main__":
    main()
