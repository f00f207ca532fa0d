"""What can be measured of the Milvus backend here: Milvus Lite (embedded, FLAT index).

    python bench/milvus_speed.py [--sizes 10000,50000] [--queries 100]

For each size: bench/common.py's clustered 1280-d CNN-like vectors written through
MilvusBackend.add in batches of 4096 (rows/s), then --queries searches of rows of the
index and of held-out vectors through MilvusBackend.knn (Milvus candidates re-ranked
exactly), p50/p95 ms and recall@10 against numpy, and the batch neighbours() rate.
Milvus Lite runs a FLAT (exact) index in one local process: it says what the
backend's own overhead is, not what a Milvus server's HNSW index would do.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import collection, machine, percentile, real_embeddings, table  # noqa: E402

from datasette_imgsim.store import IndexSpec  # noqa: E402
from datasette_imgsim.store.milvus import MilvusBackend  # noqa: E402

K = 10


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,50000")
    parser.add_argument("--queries", type=int, default=100)
    args = parser.parse_args(argv)
    seeds = real_embeddings()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        backend = MilvusBackend(f"{tmp}/bench.milvus.db")
        for n in [int(s) for s in args.sizes.split(",")]:
            X_all = np.concatenate(list(collection(n + args.queries, seeds)))
            rng = np.random.default_rng(3)
            held_pos = rng.choice(len(X_all), args.queries, replace=False)
            keep = np.setdiff1d(np.arange(len(X_all)), held_pos)
            X, held = X_all[keep], X_all[held_pos]
            spec = IndexSpec(n, "photos", "path", "id", None, "cnn", "cosine", 1280, "float",
                             f"_imgsim_bench_{n}")
            spec.params.update(backend.create(spec))
            t0 = time.monotonic()
            for i in range(0, n, 4096):
                backend.add(spec, list(range(i + 1, min(i + 4096, n) + 1)), X[i:i + 4096])
            backend.count(spec)  # waits for the writes to be searchable
            write_s = time.monotonic() - t0
            times_r, times_h, rec_r, rec_h = [], [], [], []
            for pos in rng.choice(n, args.queries, replace=False):
                exact = set((np.argsort(-(X @ X[pos]))[:K + 1] + 1).tolist()) - {pos + 1}
                t0 = time.perf_counter()
                found = backend.knn(spec, X[pos], K + 1)
                times_r.append((time.perf_counter() - t0) * 1000)
                rec_r.append(len(exact & {i for i, _ in found if i != pos + 1}) / K)
            for h in held:
                exact = set((np.argsort(-(X @ h))[:K] + 1).tolist())
                t0 = time.perf_counter()
                found = backend.knn(spec, h, K)
                times_h.append((time.perf_counter() - t0) * 1000)
                rec_h.append(len(exact & {i for i, _ in found}) / K)
            t0 = time.perf_counter()
            allowed = set(range(1, n + 1, 100))
            backend.knn(spec, held[0], K, allowed=allowed)
            filtered_ms = (time.perf_counter() - t0) * 1000
            rows.append([f"{n:,}", f"{n / write_s:,.0f}", f"{percentile(times_r, 50):.1f}",
                         f"{percentile(times_r, 95):.1f}", f"{np.mean(rec_r):.3f}",
                         f"{percentile(times_h, 50):.1f}", f"{np.mean(rec_h):.3f}", f"{filtered_ms:.0f}"])
            print(rows[-1], file=sys.stderr, flush=True)
            backend.drop(spec)
    print(f"\nMachine: {machine()}")
    print(f"Command: python bench/milvus_speed.py --sizes {args.sizes} --queries {args.queries}\n")
    print(table(["vectors", "writes rows/s", "row query p50 ms", "p95 ms", "recall@10 rows",
                 "held-out p50 ms", "recall@10 held-out", "filtered to 1% ms"], rows))


if __name__ == "__main__":
    main()
