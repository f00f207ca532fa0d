"""How much the bit pre-filter misses on vectors with little cluster structure (HOG, colour).

    python bench/prefilter_recall.py [--crops 12000] [--queries 300]

bench/query_speed.py measures recall on clustered CNN embeddings. This script asks the
same question of `hog` and `histogram`, whose vectors of unrelated photos are far less
clustered: it cuts --crops random square crops (20-90% of the shorter side) out of the
real photos in demo.db, extracts each method's vectors as indexing does, writes them
to a real index (bit table included) in a temporary database, and for --queries random
rows compares the plugin's search (`Store.knn`) with sqlite-vec's exact scan
(`knn(..., exact=True)`). It prints, per method:

- recall@10 over all queries, and over the queries that have a close neighbour (an
  overlapping crop: exact nearest distance under a quarter of the exact 10th);
- recall@1: the nearest other row comes first;
- the distance excess at rank 10: how much farther the 10th result is than the exact 10th
  (mean and worst), i.e. how much a miss costs;
- the centring the index chose (store.choose_centring): the fraction of the mean its
  sign bits are taken around.
"""
from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, table  # noqa: E402

from datasette_imgsim.images import load_image  # noqa: E402
from datasette_imgsim.plugins import get_method  # noqa: E402
from datasette_imgsim.store import ItemResult, Store, connect  # noqa: E402

METHODS = ["hog", "histogram"]
K = 10


def crops(n: int, seed: int = 0) -> list[np.ndarray]:
    import cv2

    conn = sqlite3.connect(ROOT / "demo.db")
    photos = [load_image(blob, 512) for (blob,) in conn.execute(
        "select image from photos where variant_of is null order by id")]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        pixels = photos[rng.integers(len(photos))]
        h, w = pixels.shape[:2]
        side = int(min(h, w) * rng.uniform(0.2, 0.9))
        y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        out.append(cv2.resize(np.ascontiguousarray(pixels[y:y + side, x:x + side]), (128, 128),
                              interpolation=cv2.INTER_AREA))
    return out


def measure(store: Store, name: str, images: list[np.ndarray], queries: int) -> list:
    method = get_method(name)
    vectors = method.vectors_for(method.extract(images).vectors, method.metric)
    spec, _ = store.create_index("crops", "image", "id", None, name, method.metric,
                                 method.dims, method.element_type)
    for start in range(0, len(vectors), 1024):
        with store.conn:
            store.write(spec, [ItemResult(i + 1, "f", v)
                               for i, v in enumerate(vectors[start:start + 1024], start)])
    spec = store.index("crops", name)
    rng = np.random.default_rng(1)
    recall, close_recall, first, excess = [], [], [], []
    for row in rng.choice(len(vectors), queries, replace=False):
        query = vectors[row].tobytes()
        # k + 1: the query row itself comes back first, at distance 0.
        fast = store.knn(spec, query, K + 1)[1:]
        exact = store.knn(spec, query, K + 1, exact=True)[1:]
        hit = len({pk for pk, _, _ in fast} & {pk for pk, _, _ in exact}) / K
        recall.append(hit)
        if exact[0][1] < exact[-1][1] / 4:
            close_recall.append(hit)
        first.append(fast[0][0] == exact[0][0])
        excess.append(fast[-1][1] / exact[-1][1] - 1 if exact[-1][1] > 0 else 0.0)
    return [name, f"{spec.quantized['bits']}", f"{spec.quantized['centring']}", f"{np.mean(recall):.3f}",
            f"{np.mean(close_recall):.3f} ({len(close_recall)})" if close_recall else "-",
            f"{np.mean(first):.3f}", f"{np.mean(excess) * 100:.2f}%", f"{max(excess) * 100:.1f}%"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--crops", type=int, default=12000)
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args(argv)
    started = time.monotonic()
    images = crops(args.crops)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(connect(str(Path(tmp) / "recall.db")))
        for name in METHODS:
            rows.append(measure(store, name, images, args.queries))
    print(f"\nMachine: {machine()}")
    print(f"Command: python bench/prefilter_recall.py --crops {args.crops} --queries {args.queries}\n")
    print(table(["method", "bits", "centring", "recall@10", "recall@10, queries with a close neighbour (n)",
                 "recall@1", "rank-10 distance excess, mean", "worst"], rows))
    print(f"\n({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
