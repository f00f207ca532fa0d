"""Approximate search side by side: the plugin (HNSW graph beside the index, pre-filter,
plain vec0) against numpy and the in-process ANN libraries, in one run.

    python bench/ann_speed.py                         # cnn 10k, 100k; hog, histogram 12k
    python bench/ann_speed.py --sizes 10000 --crops 3000 --queries 100   # quick

Collections: bench/common.py's clustered CNN-like vectors (real EfficientNet embeddings
plus event and burst noise, 1280-d) at each --sizes, and the real hog (1764-d) and
histogram (512-d) vectors of --crops random crops of demo.db's photos (little cluster
structure). For each, --queries random rows are held out of every index: they are
the "query images outside it" (upload search, similar_to_image()). Queries of rows of
the index ask for k + 1 and drop the row itself, as similar_images() does.

For each method: build seconds, p50/p95 ms of one query at a time (one thread), and
recall@10 against numpy's exact answer, for rows and for held-out queries. The
plugin's rows go through Store.knn on a real index database (vec0 rows, ANN log,
graph file), including the exact re-rank and the key lookups; "refresh" is the cost
of bringing the graph up to a new committed batch of 4096 rows, against that batch's
Store.write. Filtered rows ask for 10 among 1% / 10% of the rows (allowed_item_ids).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import CACHE, collection, machine, percentile, real_embeddings, table  # noqa: E402

from datasette_imgsim.store import ItemResult, Store, ann, connect  # noqa: E402

K = 10
BATCH = 4096


def exact_topk(X: np.ndarray, Q: np.ndarray, k: int) -> np.ndarray:
    out = np.empty((len(Q), k), np.int64)
    for s in range(0, len(Q), 256):
        S = Q[s:s + 256] @ X.T
        top = np.argpartition(-S, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(S, top, 1), axis=1)
        out[s:s + 256] = np.take_along_axis(top, order, 1)
    return out


def timed_queries(fn, queries: np.ndarray) -> tuple[list, list]:
    """fn(q) -> list of positions; returns (times ms, results)."""
    times, results = [], []
    for q in queries[:2]:
        fn(q)
    for q in queries:
        t0 = time.perf_counter()
        r = fn(q)
        times.append((time.perf_counter() - t0) * 1000)
        results.append(r)
    return times, results


def recall(results, truth, drop=None) -> float:
    hits = []
    for n, (r, t) in enumerate(zip(results, truth)):
        r = [int(x) for x in r if drop is None or int(x) != drop[n]][:K]
        t = [int(x) for x in t if drop is None or int(x) != drop[n]][:K]
        hits.append(len(set(r) & set(t)) / K)
    return float(np.mean(hits))


def libraries(X: np.ndarray):
    """(name, build() -> search(q, k) -> positions) of each in-process library."""
    import faiss
    import hnswlib
    from usearch.index import Index as UIndex

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    n, d = X.shape

    def hnsw(M, efc, ef):
        def build():
            index = hnswlib.Index(space="cosine", dim=d)
            index.init_index(max_elements=n, M=M, ef_construction=efc)
            index.add_items(X, np.arange(n), num_threads=-1)
            index.set_ef(ef)
            index.set_num_threads(1)
            return lambda q, k: index.knn_query(q, k=k, num_threads=1)[0][0]
        return build

    def usearch(dtype, connectivity=None, expansion_add=None, expansion_search=None):
        def build():
            kw = {}
            if connectivity:
                kw.update(connectivity=connectivity, expansion_add=expansion_add,
                          expansion_search=expansion_search)
            index = UIndex(ndim=d, metric="cos", dtype=dtype, **kw)
            index.add(np.arange(n), X, threads=os.cpu_count() or 1)
            return lambda q, k: index.search(q, k, threads=1).keys
        return build

    def faiss_hnsw(M, ef):
        def build():
            index = faiss.IndexHNSWFlat(d, M, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = 200
            index.add(X)
            index.hnsw.efSearch = ef
            return lambda q, k: _faiss_search(index, q, k)
        return build

    def faiss_ivf(nprobe):
        def build():
            nlist = int(4 * np.sqrt(n))
            quantizer = faiss.IndexFlatIP(d)
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            index.train(X[np.random.default_rng(0).choice(n, min(n, 40 * nlist), replace=False)])
            index.add(X)
            index.nprobe = nprobe
            return lambda q, k: _faiss_search(index, q, k)
        return build

    return [
        ("hnswlib M16 efc200 ef48", hnsw(16, 200, 48)),
        ("hnswlib M16 efc200 ef96", hnsw(16, 200, 96)),
        ("usearch f32 (defaults)", usearch("f32")),
        ("usearch f32 M16 efc200 ef48", usearch("f32", 16, 200, 48)),
        ("usearch i8 M16 efc200 ef96", usearch("i8", 16, 200, 96)),
        ("faiss HNSW32 ef64", faiss_hnsw(32, 64)),
        ("faiss IVFFlat nprobe 8", faiss_ivf(8)),
    ]


def _faiss_search(index, q, k):
    import faiss

    faiss.omp_set_num_threads(1)
    return index.search(q.reshape(1, -1), k)[1][0]


def plugin(X: np.ndarray, folder: Path, rows_q: np.ndarray, held: np.ndarray, dims: int,
           method: str) -> list[list]:
    """The plugin's own paths on an index database of X (positions = pk - 1)."""
    path = folder / f"ann_{method}_{len(X)}.db"
    for p in folder.glob(path.name + "*"):
        if p.is_file():
            p.unlink()
    conn = connect(str(path))
    conn.execute("create table photos (id integer primary key)")
    store = Store(conn)
    spec, _ = store.create_index("photos", "path", "id", None, method, "cosine", dims, "float")
    t0 = time.monotonic()
    for i in range(0, len(X), BATCH):
        with conn:
            store.write(spec, [ItemResult(i + j + 1, "b", v) for j, v in enumerate(X[i:i + BATCH])])
    write_s = time.monotonic() - t0
    spec = store.index("photos", method)
    t0 = time.monotonic()
    info = store.refresh_ann(spec, save=True)
    build_s = time.monotonic() - t0
    disk = sum(p.stat().st_size for p in (folder / (path.name + ".ann")).glob("*.hnsw"))
    rows = []

    def search(exact=False, allowed=None):
        return lambda q: [pk - 1 for pk, _, _ in store.knn(spec, q, K + 1, exact=exact,
                                                             allowed_item_ids=allowed)]

    truth_rows = exact_topk(X, X[rows_q], K + 1)
    truth_held = exact_topk(X, held, K)
    for name, fn in (("plugin: HNSW graph + exact re-rank", search()),):
        t_r, r_r = timed_queries(fn, X[rows_q])
        t_h, r_h = timed_queries(fn, held)
        rows.append([name, f"{build_s:.1f}", *_stats(t_r + t_h),
                     f"{recall(r_r, truth_rows, rows_q):.3f}", f"{recall(r_h, truth_held):.3f}"])
    # The same index without its graph: the sign-bit pre-filter and plain vec0.
    saved = ann.QUERY_CATCHUP
    ann.clear_cache()
    spec.params = {k: v for k, v in spec.params.items() if k != "ann"}
    for name, fn in (("plugin: sign-bit pre-filter (no graph)", search()),
                     ("plain vec0 exact scan", search(exact=True))):
        qs_r, qs_h = (X[rows_q], held) if "pre-filter" in name else (X[rows_q[:20]], held[:20])
        t_r, r_r = timed_queries(fn, qs_r)
        t_h, r_h = timed_queries(fn, qs_h)
        rows.append([name, "-", *_stats(t_r + t_h),
                     f"{recall(r_r, truth_rows[:len(qs_r)], rows_q[:len(qs_r)]):.3f}",
                     f"{recall(r_h, truth_held[:len(qs_h)]):.3f}"])
    spec = store.index("photos", method)
    ann.QUERY_CATCHUP = saved
    store.refresh_ann(spec)  # loads the saved file
    # Filtered: 10 nearest among a random 1% / 10% of the rows.
    rng = np.random.default_rng(5)
    for fraction in (0.01, 0.1):
        allowed_pos = np.sort(rng.choice(len(X), max(int(len(X) * fraction), K), replace=False))
        allowed = store.item_ids_for(spec, (allowed_pos + 1).tolist())
        fn = search(allowed=allowed)
        t_h, r_h = timed_queries(fn, held[:60])
        sub = X[allowed_pos]
        truth = allowed_pos[exact_topk(sub, held[:60], K)]
        short = sum(len(r) < K for r in r_h)
        rows.append([f"plugin: filtered to {fraction:.0%} of rows", "-", *_stats(t_h), "-",
                     f"{recall(r_h, truth):.3f}" + (f" ({short} short)" if short else "")])
    # Incremental refresh: one more committed batch, then the graph brought up to it.
    extra = X[:BATCH] + 0.01 * np.random.default_rng(9).standard_normal((BATCH, dims)).astype(np.float32)
    extra /= np.linalg.norm(extra, axis=1, keepdims=True)
    t0 = time.monotonic()
    with conn:
        store.write(spec, [ItemResult(len(X) + j + 1, "b", v) for j, v in enumerate(extra)])
    batch_write = time.monotonic() - t0
    t0 = time.monotonic()
    store.refresh_ann(spec, save=False)
    batch_refresh = time.monotonic() - t0
    with conn:
        store.delete(spec, range(len(X) + 1, len(X) + BATCH + 1))
    store.refresh_ann(spec, save=False)
    conn.close()
    ann.clear_cache()
    extras = {"write_s": write_s, "build_s": build_s, "graph_disk": disk, "batch_write": batch_write,
              "batch_refresh": batch_refresh, "info": info}
    return rows, extras


def _stats(times):
    return f"{percentile(times, 50):.2f}", f"{percentile(times, 95):.2f}"


def run_collection(label: str, X_all: np.ndarray, queries: int, folder: Path, method: str,
                   with_libraries=True) -> tuple[list, dict]:
    rng = np.random.default_rng(3)
    held_pos = rng.choice(len(X_all), queries, replace=False)
    keep = np.setdiff1d(np.arange(len(X_all)), held_pos)
    X, held = np.ascontiguousarray(X_all[keep]), np.ascontiguousarray(X_all[held_pos])
    rows_q = rng.choice(len(X), queries, replace=False)
    truth_rows = exact_topk(X, X[rows_q], K + 1)
    truth_held = exact_topk(X, held, K)
    out = []
    t_r, _ = timed_queries(lambda q: exact_topk(X, q[None], K + 1)[0], X[rows_q])
    out.append([label, "numpy exact (X @ q)", "-", *_stats(t_r), "1.000", "1.000"])
    if with_libraries:
        for name, build in libraries(X):
            t0 = time.monotonic()
            search = build()
            build_s = time.monotonic() - t0
            t_r, r_r = timed_queries(lambda q: search(q, K + 1), X[rows_q])
            t_h, r_h = timed_queries(lambda q: search(q, K), held)
            out.append([label, name, f"{build_s:.1f}", *_stats(t_r + t_h),
                        f"{recall(r_r, truth_rows, rows_q):.3f}", f"{recall(r_h, truth_held):.3f}"])
            del search
            print(f"  {label} {name}: {out[-1][2:]}", file=sys.stderr, flush=True)
    rows, extras = plugin(X, folder, rows_q, held, X.shape[1], method)
    out += [[label, *r] for r in rows]
    for r in rows:
        print(f"  {label} {r}", file=sys.stderr, flush=True)
    return out, extras


def feature_vectors(name: str, crops: int) -> np.ndarray:
    path = CACHE / f"features_{name}_{crops}.npy"
    if path.exists():
        return np.load(path)
    from prefilter_recall import crops as make_crops

    if name == "hog":
        from datasette_imgsim.methods.hog import hog_method as make
    else:
        from datasette_imgsim.methods.histogram import histogram_method as make

    method = make()
    images = make_crops(crops)
    vectors = method.vectors_for(method.extract(images).vectors, method.metric).astype(np.float32)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--crops", type=int, default=12000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--no-libraries", action="store_true")
    args = parser.parse_args(argv)
    started = time.monotonic()
    seeds = real_embeddings()
    rows, notes = [], []
    with tempfile.TemporaryDirectory(dir=os.environ.get("IMGSIM_BENCH_TMP")) as tmp:
        folder = Path(tmp)
        for n in [int(s) for s in args.sizes.split(",") if s]:
            X = np.concatenate(list(collection(n + args.queries, seeds)))
            out, extras = run_collection(f"cnn {n:,}", X, args.queries, folder, "cnn",
                                         not args.no_libraries)
            rows += out
            notes.append(("cnn", n, extras))
            del X
        for name in ("hog", "histogram"):
            if args.crops <= 0:
                continue
            X = feature_vectors(name, args.crops + args.queries)
            X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
            out, extras = run_collection(f"{name} {args.crops:,}", X.astype(np.float32), args.queries,
                                         folder, name, not args.no_libraries)
            rows += out
            notes.append((name, args.crops, extras))
    print(f"\nMachine: {machine()}")
    print(f"Command: python bench/ann_speed.py --sizes {args.sizes} --crops {args.crops} "
          f"--queries {args.queries}\n")
    print(table(["collection", "method", "build s", "p50 ms", "p95 ms", "recall@10 rows",
                 "recall@10 held-out"], rows))
    print()
    print(table(["collection", "vec0 write s", "graph build s", "graph file per 100k",
                 "batch of 4096: write s", "graph refresh s", "refresh / write"],
                [[f"{m} {n:,}", f"{e['write_s']:.1f}", f"{e['build_s']:.1f}",
                  f"{e['graph_disk'] * 100_000 / n / 1e6:.0f} MB", f"{e['batch_write']:.2f}",
                  f"{e['batch_refresh']:.2f}", f"{e['batch_refresh'] / e['batch_write']:.0%}"]
                 for m, n, e in notes]))
    print(f"\n({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
