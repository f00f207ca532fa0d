"""Copy-detection accuracy of every method, side by side, with and without geometric
re-ranking; and the distance calibration behind the duplicates thresholds.

    python bench/accuracy.py                      # standard transforms, all methods
    python bench/accuracy.py --hard --rerank      # + harsh cases, with/without re-ranking
    python bench/accuracy.py --calibrate          # distances: copies vs similar shots vs unrelated
    python bench/accuracy.py --no-fetch           # scikit-image photos only (no apt-get)

Originals and distractors (bench/copydetect.py) are written as JPEG files into a
temporary folder, listed in a photos table and indexed with the real CLI
(`datasette imgsim index`); each transformed copy is then searched with
search.similar_to_image, as `datasette imgsim search` does. Each query has exactly one
right answer (its original), so average precision is 1/rank of the original within the
top 100 (0 if absent) and mAP is the mean reciprocal rank.
"""
from __future__ import annotations

import argparse
import collections
import os
import sqlite3
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from copydetect import HARD_TRANSFORMS, TRANSFORMS, jpeg, photo_sets, similar_shots  # noqa: E402

METHODS = ["cnn", "phash", "hog", "histogram"]
TOP = 100


def build_index(folder: str, originals: dict, distractors: dict, methods: list[str]) -> str:
    from click.testing import CliRunner
    from datasette.cli import cli

    img = os.path.join(folder, "img")
    os.makedirs(img, exist_ok=True)
    db = os.path.join(folder, "photos.db")
    conn = sqlite3.connect(db)
    conn.execute("create table photos (id integer primary key, name text, role text, path text)")
    for role, photos in (("original", originals), ("distractor", distractors)):
        for name, pixels in photos.items():
            path = f"img/{name}.jpg"
            with open(os.path.join(folder, path), "wb") as f:
                f.write(jpeg(pixels, 92))
            conn.execute("insert into photos (name, role, path) values (?, ?, ?)", (name, role, path))
    conn.commit()
    conn.close()
    args = ["imgsim", "index", db, "--table", "photos", "--column", "path", "--workers", "2"]
    for method in methods:
        args += ["--method", method]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    print(result.output.strip().splitlines()[-1], file=sys.stderr)
    return db


def make_queries(originals: dict, transforms: dict) -> list[tuple[str, str, str, bytes]]:
    """(original name, transform name, family, JPEG bytes) for every pair."""
    queries = []
    for name, pixels in originals.items():
        for tname, (family, transform, quality) in transforms.items():
            queries.append((name, tname, family, jpeg(np.ascontiguousarray(transform(pixels)), quality)))
    return queries


def evaluate(db: str, queries: list, methods: list[str], with_rerank: bool):
    """{(method, rerank?): [(family, rank or None)]} and per-query latencies."""
    from datasette_imgsim import rerank as geometric
    from datasette_imgsim.search import similar_to_image
    from datasette_imgsim.store import Store, connect

    store = Store(connect(db, readonly=True))
    pk_of = dict(store.conn.execute("select name, id from photos"))
    ranks = collections.defaultdict(list)
    seconds = collections.defaultdict(float)
    match_seconds = [0.0, 0]
    for n, (name, tname, family, data) in enumerate(queries):
        want = pk_of[name]
        query = None
        scores: dict = {}
        for method in methods:
            t = time.perf_counter()
            spec, results = similar_to_image(store, "photos", data, TOP, method)
            seconds[method] += time.perf_counter() - t
            ranks[(method, False)].append((family, tname, _rank(results, want)))
            if not with_rerank:
                continue
            if query is None:
                t = time.perf_counter()
                query = geometric.query_features(data)
                match_seconds[0] += time.perf_counter() - t
            # Inliers of (query, candidate) are the same whichever method proposed the
            # candidate: computed once per query and reused across methods.
            for result in results[:geometric.CANDIDATES]:
                if result["pk"] not in scores:
                    t = time.perf_counter()
                    features = geometric.row_features(store, spec, result["pk"])
                    scores[result["pk"]] = geometric.inliers(query, features) if features else 0
                    match_seconds[0] += time.perf_counter() - t
                    match_seconds[1] += 1
            reranked = geometric.reorder(results, scores)
            ranks[(method, True)].append((family, tname, _rank(reranked, want)))
        if (n + 1) % 100 == 0:
            print(f"  {n + 1}/{len(queries)} queries", file=sys.stderr)
    return ranks, {m: s / len(queries) for m, s in seconds.items()}, match_seconds


def _rank(results, want):
    for position, result in enumerate(results, start=1):
        if result["pk"] == want:
            return position
    return None


def summarise(entries) -> tuple[float, float]:
    ranks = [r for _, _, r in entries]
    recall = sum(1 for r in ranks if r == 1) / len(ranks)
    ap = sum(1.0 / r for r in ranks if r) / len(ranks)
    return recall, ap


def table(ranks, methods, with_rerank, families) -> str:
    columns = [(m, False) for m in methods] + ([(m, True) for m in methods] if with_rerank else [])
    header = "| family | queries | " + " | ".join(
        f"{m}{' +geo' if r else ''}" for m, r in columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 2)]
    for family in families + ["all"]:
        cells = []
        count = 0
        for key in columns:
            entries = [e for e in ranks[key] if family == "all" or e[0] == family]
            count = len(entries)
            recall, ap = summarise(entries)
            cells.append(f"{recall:.3f} / {ap:.3f}")
        label = f"**{family}**" if family == "all" else family
        lines.append(f"| {label} | {count} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def misses(ranks, method, rerank=False, limit=15):
    out = [(tname, rank) for family, tname, rank in ranks[(method, rerank)] if rank != 1]
    counter = collections.Counter(t for t, _ in out)
    return ", ".join(f"{t} x{c}" for t, c in counter.most_common(limit))


# --- calibration ---------------------------------------------------------------------


def calibrate(originals, distractors, methods):
    """Distances from each original to its copies, to its similar shots and to the
    nearest unrelated picture, per method; and how well each threshold separates them."""
    from datasette_imgsim.duplicates import distances, prepared
    from datasette_imgsim.images import load_image
    from datasette_imgsim.plugins import get_method

    def vectors(method, images, quality=90):
        m = get_method(method)
        pixels = [load_image(jpeg(np.ascontiguousarray(p), quality), m.min_size) for p in images]
        raw = np.concatenate([m.vectors_for(m.extract(pixels[i:i + 16]).vectors, m.metric)
                              for i in range(0, len(pixels), 16)])
        return prepared(raw, m.metric), m.metric

    names = list(originals)
    shots = similar_shots(originals)
    copy_transforms = {k: v for k, v in TRANSFORMS.items()}
    for method in methods:
        base, metric = vectors(method, [originals[n] for n in names])
        copies = collections.defaultdict(list)
        for tname, (family, transform, quality) in copy_transforms.items():
            v, _ = vectors(method, [transform(originals[n]) for n in names], quality)
            copies[family].extend(np.diag(distances(base, v, metric)).tolist())
        a, _ = vectors(method, [p for _, p, _ in shots])
        b, _ = vectors(method, [p for _, _, p in shots])
        similar = np.diag(distances(a, b, metric))
        others, _ = vectors(method, list(distractors.values()))
        pool = np.concatenate([base, others])
        d = distances(base, pool, metric)
        d[np.arange(len(base)), np.arange(len(base))] = np.inf
        unrelated = d.min(1)
        all_copies = np.concatenate([np.array(v) for v in copies.values()])
        print(f"\n### {method} ({metric})\n")
        print("| pairs | n | min | median | 90th pct | max |\n|---|---|---|---|---|---|")
        for label, values in [*((f"copy: {f}", np.array(v)) for f, v in copies.items()),
                              ("similar shot (panned 30% overlap, stereo pair)", similar),
                              ("nearest unrelated picture", unrelated)]:
            print(f"| {label} | {len(values)} | {values.min():.4g} | {np.median(values):.4g} | "
                  f"{np.percentile(values, 90):.4g} | {values.max():.4g} |")
        print("\n| threshold | copies within | similar shots within | unrelated within |\n|---|---|---|---|")
        for t in _candidates(method):
            print(f"| {t:g} | {np.mean(all_copies <= t):.3f} | {np.mean(similar <= t):.3f} | "
                  f"{np.mean(unrelated <= t):.3f} |")


def _candidates(method):
    return {"phash": [0, 4, 6, 8, 10, 12, 14, 16, 20],
            "cnn": [0.02, 0.05, 0.08, 0.1, 0.12, 0.15, 0.2, 0.25, 0.3],
            "hog": [0.01, 0.02, 0.05, 0.08, 0.1, 0.15, 0.2],
            "histogram": [0.005, 0.01, 0.02, 0.05, 0.1, 0.2]}.get(method, [0.01, 0.05, 0.1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--hard", action="store_true", help="also the harsh cases of issue #7")
    parser.add_argument("--only-hard", action="store_true", help="only the harsh cases")
    parser.add_argument("--rerank", action="store_true", help="also with geometric re-ranking")
    parser.add_argument("--calibrate", action="store_true", help="duplicate-threshold calibration")
    parser.add_argument("--no-fetch", action="store_true", help="skip Debian's mate-backgrounds")
    parser.add_argument("--photos", action="append", default=[], help="a folder of more originals")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N originals")
    parser.add_argument("--latency", type=int, default=20,
                        help="queries timed end to end with cold re-ranking caches")
    args = parser.parse_args()
    methods = args.methods.split(",")

    with tempfile.TemporaryDirectory(prefix="imgsim-accuracy-") as folder:
        originals, distractors = photo_sets(tuple(args.photos), fetch=not args.no_fetch,
                                            workdir=folder)
        if args.limit:
            originals = dict(list(originals.items())[:args.limit])
        print(f"{len(originals)} originals, {len(distractors)} distractors", file=sys.stderr)
        if args.calibrate:
            calibrate(originals, distractors, methods)
            return
        transforms = {} if args.only_hard else dict(TRANSFORMS)
        if args.hard or args.only_hard:
            transforms.update(HARD_TRANSFORMS)
        db = build_index(folder, originals, distractors, methods)
        queries = make_queries(originals, transforms)
        print(f"{len(queries)} queries", file=sys.stderr)
        ranks, latency, (match_seconds, matched) = evaluate(db, queries, methods, args.rerank)
        families = list(dict.fromkeys(f for f, _, _ in transforms.values()))
        print(f"\n{len(originals)} originals + {len(distractors)} distractors indexed; "
              f"{len(queries)} queries. Cells: recall@1 / mAP.\n")
        print(table(ranks, methods, args.rerank, families))
        print("\nMean search time per query (embed + KNN): " + ", ".join(
            f"{m} {latency[m] * 1000:.0f} ms" for m in methods))
        for method in methods:
            print(f"\n{method} misses: {misses(ranks, method) or 'none'}")
            if args.rerank:
                print(f"{method}+geometric misses: {misses(ranks, method, True) or 'none'}")
        if args.rerank:
            print(f"\nLocal-feature matching: {matched} (query, candidate) pairs, "
                  f"{match_seconds / max(matched, 1) * 1000:.1f} ms each incl. feature extraction")
            print(end_to_end_latency(db, queries[:: max(1, len(queries) // args.latency)]
                                     [:args.latency], methods))


def end_to_end_latency(db, queries, methods) -> str:
    """similar_to_image with and without rerank="geometric", caches cleared each query."""
    from datasette_imgsim import rerank as geometric
    from datasette_imgsim.search import similar_to_image
    from datasette_imgsim.store import Store, connect

    store = Store(connect(db, readonly=True))
    lines = ["\nEnd-to-end latency per query, k=10, re-ranking the top "
             f"{geometric.CANDIDATES} (cold: candidate features computed; warm: cached):",
             "| method | plain | +geometric cold | +geometric warm |", "|---|---|---|---|"]
    for method in methods:
        plain, cold, warm = [], [], []
        for _, _, _, data in queries:
            t = time.perf_counter()
            similar_to_image(store, "photos", data, 10, method)
            plain.append(time.perf_counter() - t)
            geometric._cache.clear()
            t = time.perf_counter()
            similar_to_image(store, "photos", data, 10, method, rerank="geometric")
            cold.append(time.perf_counter() - t)
            t = time.perf_counter()
            similar_to_image(store, "photos", data, 10, method, rerank="geometric")
            warm.append(time.perf_counter() - t)
        lines.append(f"| {method} | {np.median(plain) * 1000:.0f} ms | "
                     f"{np.median(cold) * 1000:.0f} ms | {np.median(warm) * 1000:.0f} ms |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
