"""Duplicate grouping at scale: a synthetic 100k-image index, timed end to end.

    python bench/duplicates_speed.py                 # 100,000 images, phash and cnn
    python bench/duplicates_speed.py -n 20000 --methods phash

Builds a photos table of N rows and writes synthetic vectors straight into real indexes
(Store.create_index / Store.write, as the indexer does; extracting 100k real images
would take an hour and measure the indexer, not the grouping):

- cnn: 1280-d non-negative vectors around 500 "scene" centres (unrelated images of one
  scene are 0.2-0.4 apart in cosine distance, like real EfficientNet embeddings of
  similar photos), with planted groups of 2-4 edited copies 0.01-0.06 apart;
- phash: random 64-bit hashes with planted copies 0-6 bits apart.

A float index gets its HNSW graph as the indexer leaves it (Store.refresh_ann), so above
20,000 rows the grouping takes its neighbours from the graph (candidates.near_pairs).
Then runs duplicates.find_duplicates from the index and reports the time, the process's
peak resident memory so far (the build's included when it ran in the same process: run
once with --db PATH --build-only, then again with --db PATH), the groups found and the recall of the planted pairs.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import sys
import tempfile
import time

import numpy as np


def synthetic(method: str, n: int, rng) -> tuple[np.ndarray, list[list[int]]]:
    row = 0
    originals = n // 2
    groups = []
    if method == "cnn":
        centres = np.abs(rng.standard_normal((500, 1280), dtype=np.float32))
        vectors = scene_shots(rng, centres, n)
    else:
        vectors = rng.integers(0, 256, size=(n, 8), dtype=np.uint8)
    # Planted groups: rows from `originals` on are copies of earlier rows.
    row = originals
    source = 0
    while row < n and len(groups) < n // 20:
        size = int(rng.integers(1, 4))
        members = [source]
        for _ in range(size):
            if row >= n:
                break
            if method == "cnn":
                scale = rng.uniform(0.004, 0.010)
                v = np.abs(vectors[source] + rng.normal(scale=scale, size=1280))
                vectors[row] = v / np.linalg.norm(v)
            else:
                bits = np.unpackbits(vectors[source])
                flip = rng.choice(64, size=int(rng.integers(0, 7)), replace=False)
                bits[flip] ^= 1
                vectors[row] = np.packbits(bits)
            members.append(row)
            row += 1
        groups.append(members)
        source += 1
    # The rest of the rows beyond the copies are more unrelated images.
    if method == "cnn":
        others = np.abs(rng.standard_normal((500, 1280), dtype=np.float32))
        vectors[row:] = scene_shots(rng, others, n - row)
    return vectors, groups


def scene_shots(rng, centres: np.ndarray, n: int, chunk: int = 50_000) -> np.ndarray:
    """n unit vectors, each a random scene centre plus noise, made a chunk at a time
    (1M x 1280 float32 is 5 GB; float64 temporaries of it at once would not fit)."""
    vectors = np.empty((n, centres.shape[1]), dtype=np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        v = np.abs(centres[rng.integers(0, len(centres), m)]
                   + 0.55 * rng.standard_normal((m, centres.shape[1]), dtype=np.float32))
        vectors[start:start + m] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return vectors


def planted_distances(store, spec, pairs: list[tuple[int, int]]) -> np.ndarray:
    """The stored distance of each planted pair (rows are pk - 1)."""
    a = store.vectors_of(spec, [i + 1 for i, _ in pairs])
    b = store.vectors_of(spec, [j + 1 for _, j in pairs])
    if spec.metric == "hamming":
        return np.unpackbits(a ^ b, axis=1).sum(axis=1).astype(np.float64)
    return 1.0 - np.einsum("ij,ij->i", a, b) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def build(db: str, n: int, methods: list[str], seed: int = 0) -> dict:
    from datasette_imgsim.plugins import get_method
    from datasette_imgsim.store import ItemResult, Store, connect

    conn = sqlite3.connect(db)
    conn.execute("create table photos (id integer primary key, path text)")
    conn.executemany("insert into photos (id, path) values (?, ?)",
                     ((i + 1, f"img/{i + 1:06d}.jpg") for i in range(n)))
    conn.commit()
    conn.close()
    store = Store(connect(db))
    truth = {}
    rng = np.random.default_rng(seed)
    for method in methods:
        m = get_method(method)
        spec, _ = store.create_index("photos", "path", "id", os.path.dirname(db), method,
                                     m.metric, m.dims, m.element_type)
        vectors, groups = synthetic(method, n, rng)
        truth[method] = groups
        with store.conn:
            for start in range(0, n, 5000):
                store.write(spec, [ItemResult(i + 1, "synthetic", vectors[i])
                                   for i in range(start, min(n, start + 5000))])
        # As the indexer leaves a float index at the end of a run: with its HNSW graph.
        t = time.perf_counter()
        if store.refresh_ann(spec, save=True).get("graph"):
            print(f"{method}: HNSW graph built in {time.perf_counter() - t:.0f}s", file=sys.stderr)
    store.conn.close()
    return truth


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=100_000)
    parser.add_argument("--methods", default="phash,cnn")
    parser.add_argument("--db", help="reuse or keep the synthetic database here")
    parser.add_argument("--build-only", action="store_true",
                        help="build --db and stop (measure in a fresh process: peak memory)")
    args = parser.parse_args()
    methods = args.methods.split(",")

    from datasette_imgsim.duplicates import find_duplicates
    from datasette_imgsim.store import Store, connect

    folder = tempfile.mkdtemp(prefix="imgsim-dups-")
    db = args.db or os.path.join(folder, "synthetic.db")
    truth_file = db + ".planted.json"  # the planted groups, for a later run on the same db
    if not os.path.exists(db):
        t = time.perf_counter()
        truth = build(db, args.n, methods)
        with open(truth_file, "w") as f:
            json.dump(truth, f)
        print(f"built {args.n:,}-image synthetic index in {time.perf_counter() - t:.0f}s ({db})",
              file=sys.stderr)
        if args.build_only:
            return
    truth = None
    if os.path.exists(truth_file):
        with open(truth_file) as f:
            truth = json.load(f)
    store = Store(connect(db, readonly=True))
    print("| method | images | threshold | groups | seconds | peak resident | planted pairs grouped |")
    print("|---|---|---|---|---|---|---|")
    for method in methods:
        spec = store.index("photos", method)
        t = time.perf_counter()
        found = find_duplicates(store, spec)
        seconds = time.perf_counter() - t
        recall = "n/a"
        if truth and method in truth:
            group_of = {}
            for number, group in enumerate(found.groups):
                for member in group.members:
                    group_of[member.pk - 1] = number
            pairs = [(g[0], other) for g in truth[method] for other in g[1:]]
            together = [a in group_of and group_of.get(b) == group_of[a] for a, b in pairs]
            # Planted copies reach a little past the default threshold: the pairs within
            # it are the ones an exact search would group.
            near = planted_distances(store, spec, pairs) <= found.threshold + 1e-6
            hit, hit_near = sum(together), sum(t for t, n in zip(together, near) if n)
            recall = (f"{hit / max(len(pairs), 1):.4f} ({hit:,}/{len(pairs):,}); within the "
                      f"threshold {hit_near / max(int(near.sum()), 1):.4f} "
                      f"({hit_near:,}/{int(near.sum()):,})")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
        print(f"| {method} | {found.indexed:,} | {found.threshold:g} | {len(found.groups):,} | "
              f"{seconds:.1f} | {peak:.1f} GB | {recall} |", flush=True)


if __name__ == "__main__":
    main()
