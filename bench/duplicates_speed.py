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

Then runs duplicates.find_duplicates from the index (loading the vectors included) and
reports the time, the groups found and the recall of the planted pairs.
"""
from __future__ import annotations

import argparse
import os
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
        centres = np.abs(rng.normal(size=(500, 1280))).astype(np.float32)
        scene = rng.integers(0, 500, size=n)
        vectors = np.abs(centres[scene] + rng.normal(scale=0.55, size=(n, 1280)).astype(np.float32))
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
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
        extra = np.arange(row, n)
        fresh = np.abs(rng.normal(size=(len(extra), 1280)).astype(np.float32) * 0.55
                       + np.abs(rng.normal(size=(500, 1280)).astype(np.float32))[
                           rng.integers(0, 500, len(extra))])
        vectors[extra] = fresh / np.linalg.norm(fresh, axis=1, keepdims=True)
    return vectors, groups


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
    store.conn.close()
    return truth


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=100_000)
    parser.add_argument("--methods", default="phash,cnn")
    parser.add_argument("--db", help="reuse or keep the synthetic database here")
    args = parser.parse_args()
    methods = args.methods.split(",")

    from datasette_imgsim.duplicates import find_duplicates
    from datasette_imgsim.store import Store, connect

    folder = tempfile.mkdtemp(prefix="imgsim-dups-")
    db = args.db or os.path.join(folder, "synthetic.db")
    truth = None
    if not os.path.exists(db):
        t = time.perf_counter()
        truth = build(db, args.n, methods)
        print(f"built {args.n:,}-image synthetic index in {time.perf_counter() - t:.0f}s ({db})",
              file=sys.stderr)
    store = Store(connect(db, readonly=True))
    print("| method | images | threshold | groups | seconds | planted pairs found |")
    print("|---|---|---|---|---|---|")
    for method in methods:
        spec = store.index("photos", method)
        t = time.perf_counter()
        found = find_duplicates(store, spec)
        seconds = time.perf_counter() - t
        recall = "n/a"
        if truth:
            group_of = {}
            for number, group in enumerate(found.groups):
                for member in group.members:
                    group_of[member.pk - 1] = number
            pairs = [(g[0], other) for g in truth[method] for other in g[1:]]
            hit = sum(1 for a, b in pairs if a in group_of and group_of.get(b) == group_of[a])
            recall = f"{hit / max(len(pairs), 1):.4f} ({hit:,}/{len(pairs):,})"
        print(f"| {method} | {found.indexed:,} | {found.threshold:g} | {len(found.groups):,} | "
              f"{seconds:.1f} | {recall} |", flush=True)


if __name__ == "__main__":
    main()
