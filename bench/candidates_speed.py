"""Duplicate finding's first stage at scale: candidate pairs (each row's neighbours under
the method's candidate bound) from an existing index with its HNSW graph.

    python bench/ann_speed.py --sizes 1000000 --crops 0 --keep --indexing 0   # first: the index
    python bench/candidates_speed.py --db /tmp/imgsim-bench/ann/ann_cnn_1000000.db

Times candidates.candidate_pairs on the index (graph load included, reported apart),
and counts the pairs and their components: what verification would then decide.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from datasette_imgsim.candidates import candidate_pairs, components  # noqa: E402
from datasette_imgsim.store import Store, connect  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--bound", type=float, default=None,
                        help="candidate bound (default: the method's candidate_threshold)")
    args = parser.parse_args(argv)
    store = Store(connect(args.db))
    spec = store.indexes()[0]
    from datasette_imgsim.plugins import get_method

    bound = args.bound if args.bound is not None else get_method(spec.method).candidate_threshold
    started = time.perf_counter()
    ready = store.graph_ready(spec)
    loaded = time.perf_counter() - started
    started = time.perf_counter()
    found = candidate_pairs(store, [spec], {spec.method: bound}, args.k)
    seconds = time.perf_counter() - started
    parts = components(len(found.keys), found.pairs)
    print(f"{spec.method} index of {found.indexed:,} rows, graph {'ready' if ready else 'absent'} "
          f"(load {loaded:.1f} s); k {args.k}, bound {bound:g}: {len(found.pairs):,} candidate "
          f"pairs in {len(parts):,} components (largest {max(map(len, parts), default=0):,}) "
          f"in {seconds:.1f} s")


if __name__ == "__main__":
    main()
