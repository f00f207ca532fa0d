"""Approximate search side by side: the plugin (HNSW graph beside the index, pre-filter,
plain vec0) against numpy and the in-process ANN libraries, in one run.

    python bench/ann_speed.py                         # cnn 10k, 100k; hog, histogram 12k
    python bench/ann_speed.py --sizes 10000 --crops 3000 --queries 100   # quick
    nice -n 10 python bench/ann_speed.py --sizes 1000000 --crops 0 --keep --indexing 0
        # 1M: ~1 h on 2 cores (35 min more with faiss IVF), ~12 GB RAM, 16 GB disk

Collections: bench/common.py's clustered CNN-like vectors (real EfficientNet embeddings
plus event and burst noise, 1280-d) at each --sizes, and the real hog (1764-d) and
histogram (512-d) vectors of --crops random crops of demo.db's photos (little cluster
structure). For each, --queries random rows are held out of every index: they are
the "query images outside it" (upload search, similar_to_image()). Queries of rows of
the index ask for k + 1 and drop the row itself, as similar_images() does.

For each method: build seconds, p50/p95 ms of one query at a time (one thread), and
recall@10 against numpy's exact answer, for rows and for held-out queries. The
plugin's rows go through Store.knn on a real index database (vec0 rows, ANN log,
graph file), including the exact re-rank and the key lookups, and the similar page
JSON through Datasette. Filtered rows ask for 10 among 1% / 10% of the rows
(allowed_item_ids). The refresh table: batches of 256 rows (the indexer's
transaction) written to the index, and what keeping the graph current costs the
writer, with the graph refreshed in line after each commit (before) and by the
background refresher the indexer now runs (after); the graph's lag when the batches
end, and the time to bring it up to date. The indexing table (--indexing N): the real
`datasette imgsim index` (cnn, 2 workers) adding N small JPEGs to a 10k-row index with
its graph, background refresh against end-of-run only, alternated: img/s, and the
writer's time split into writes and graph work.

Memory at 1M (5.1 GB of vectors): the cnn vectors are generated in blocks into a
memory-mapped .npy under $IMGSIM_BENCH_CACHE and read from there (page cache, not
copies); libraries whose build would not fit the run (time or RAM) are left out above
200k rows, and the output says so. The graph the plugin builds is also queried
directly ("hnswlib: the plugin's graph"), which is hnswlib alone on the same graph.
With --keep the index database and its graph stay in the cache for the next run.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import io
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import CACHE, collection, machine, percentile, real_embeddings, table  # noqa: E402

from datasette_imgsim.store import ItemResult, Store, ann, connect  # noqa: E402

K = 10
BATCH = 4096
# Above this many rows only the libraries in LARGE_LIBRARIES are built: the others take
# 2-5 minutes per 100k rows on 2 cores (see the 100k run) and a copy of the vectors each.
LARGE = 200_000
LARGE_LIBRARIES = ("faiss IVFFlat nprobe 8",)
# Slow exact paths are timed on this many queries (each, rows and held-out).
SLOW_QUERIES = 20


def exact_topk(X: np.ndarray, Q: np.ndarray, k: int, block: int = 131072) -> np.ndarray:
    """Positions of each query's k nearest rows of X by inner product, in blocks of X's
    rows so that a memory-mapped X is never copied whole."""
    Q = np.atleast_2d(Q)
    best_s = np.full((len(Q), k), -np.inf, np.float32)
    best_i = np.zeros((len(Q), k), np.int64)
    for start in range(0, len(X), block):
        S = Q @ np.asarray(X[start:start + block]).T
        take = min(k, S.shape[1])
        top = np.argpartition(-S, take - 1, axis=1)[:, :take]
        cand_s = np.concatenate([best_s, np.take_along_axis(S, top, 1)], axis=1)
        cand_i = np.concatenate([best_i, top + start], axis=1)
        keep = np.argsort(-cand_s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(cand_s, keep, 1), np.take_along_axis(cand_i, keep, 1)
    return best_i


def exact_topk_many(X, Q, k):
    return np.concatenate([exact_topk(X, Q[s:s + 64], k) for s in range(0, len(Q), 64)])


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


def anon_rss() -> int:
    """This process's anonymous resident memory, bytes (a graph in RAM; not the page
    cache of memory-mapped vectors or database files)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("RssAnon"))


def held_out_split(total: int, queries: int) -> tuple[np.ndarray, np.ndarray]:
    """(positions of `total` held out as queries, query rows among the rest)."""
    rng = np.random.default_rng(3)
    held_pos = rng.choice(total, queries, replace=False)
    rows_q = rng.choice(total - queries, queries, replace=False)
    return held_pos, rows_q


def split_in_memory(X_all: np.ndarray, queries: int):
    held_pos, rows_q = held_out_split(len(X_all), queries)
    keep = np.setdiff1d(np.arange(len(X_all)), held_pos)
    return np.ascontiguousarray(X_all[keep]), np.ascontiguousarray(X_all[held_pos]), rows_q


def cnn_vectors(n: int, queries: int, seeds: np.ndarray):
    """(X: n rows, memory-mapped from the cache, held-out queries, query rows of X):
    the same split as split_in_memory of the whole collection, written block by block
    so that no second copy of the vectors is ever held."""
    held_pos, rows_q = held_out_split(n + queries, queries)
    path, held_path = CACHE / f"ann_cnn_{n}_{queries}.npy", CACHE / f"ann_cnn_{n}_{queries}_held.npy"
    if not (path.exists() and held_path.exists()):
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.npy")
        X = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32, shape=(n, seeds.shape[1]))
        held = np.empty((queries, seeds.shape[1]), np.float32)
        held_rank = {int(p): r for r, p in enumerate(held_pos)}
        start = kept = 0
        for block in collection(n + queries, seeds):
            positions = np.arange(start, start + len(block))
            is_held = np.isin(positions, held_pos)
            X[kept:kept + int((~is_held).sum())] = block[~is_held]
            kept += int((~is_held).sum())
            for p in positions[is_held]:
                held[held_rank[int(p)]] = block[p - start]
            start += len(block)
        X.flush()
        del X
        np.save(held_path, held)
        os.replace(partial, path)
    return np.load(path, mmap_mode="r"), np.load(held_path), rows_q


def libraries(X: np.ndarray):
    """(name, build() -> search(q, k) -> positions) of each in-process library, each
    imported when built (only the chosen ones need installing)."""
    n, d = X.shape

    built_graphs = {}  # one hnswlib build serves each search ef (13 minutes at 1M)

    def hnsw(M, efc, ef):
        def build():
            import hnswlib

            if (M, efc) not in built_graphs:
                built_graphs.clear()  # the previous settings' graph: free it first
                started = time.monotonic()
                index = hnswlib.Index(space="cosine", dim=d)
                index.init_index(max_elements=n, M=M, ef_construction=efc)
                index.add_items(X, np.arange(n), num_threads=-1)
                index.set_num_threads(1)
                built_graphs[(M, efc)] = index, time.monotonic() - started
            index, seconds = built_graphs[(M, efc)]
            index.set_ef(ef)

            def search(q, k):
                return index.knn_query(q, k=k, num_threads=1)[0][0]
            search.build_seconds = seconds  # the shared build's, not the lookup's
            return search
        return build

    def usearch(dtype, connectivity=None, expansion_add=None, expansion_search=None):
        def build():
            from usearch.index import Index as UIndex

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
            import faiss

            faiss.omp_set_num_threads(os.cpu_count() or 1)
            index = faiss.IndexHNSWFlat(d, M, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = 200
            index.add(X)
            index.hnsw.efSearch = ef
            return lambda q, k: _faiss_search(index, q, k)
        return build

    def faiss_ivf(nprobe):
        def build():
            import faiss

            faiss.omp_set_num_threads(os.cpu_count() or 1)
            nlist = int(4 * np.sqrt(n))
            quantizer = faiss.IndexFlatIP(d)
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            sample = np.sort(np.random.default_rng(0).choice(n, min(n, 40 * nlist), replace=False))
            index.train(np.ascontiguousarray(X[sample]))
            for start in range(0, n, 65536):  # in blocks: X may be memory-mapped
                index.add(np.ascontiguousarray(X[start:start + 65536]))
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


def index_database(X: np.ndarray, folder: Path, method: str, keep: bool) -> tuple[Path, dict]:
    """The plugin's index database of X (pk = position + 1) with its graph built and
    saved; reused from the cache with --keep. Returns (path, build figures)."""
    path = folder / f"ann_{method}_{len(X)}.db"
    done = path.with_suffix(".done.json")
    if keep and done.exists() and path.exists():
        return path, json.loads(done.read_text())
    remove_database(path)
    conn = connect(str(path))
    conn.execute("pragma journal_mode = wal")
    conn.execute("create table photos (id integer primary key, path text)")
    with conn:
        conn.executemany("insert into photos values (?, ?)",
                         ((i + 1, f"img/{i + 1}.jpg") for i in range(len(X))))
    store = Store(conn)
    spec, _ = store.create_index("photos", "path", "id", str(folder), method, "cosine",
                                 X.shape[1], "float")
    t0 = time.monotonic()
    for i in range(0, len(X), BATCH):
        with conn:
            store.write(spec, [ItemResult(i + j + 1, "b", v)
                               for j, v in enumerate(np.asarray(X[i:i + BATCH]))])
        print(f"\r  writing {path.name}: {min(i + BATCH, len(X)):,} rows "
              f"({time.monotonic() - t0:.0f} s)", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    write_s = time.monotonic() - t0
    conn.execute("pragma wal_checkpoint(truncate)")
    spec = store.index("photos", method)
    before = anon_rss()
    t0 = time.monotonic()
    store.refresh_ann(spec, save=True)
    figures = {"write_s": write_s, "build_s": time.monotonic() - t0,
               "graph_ram": anon_rss() - before, "db_disk": path.stat().st_size}
    conn.close()
    done.write_text(json.dumps(figures))
    return path, figures


def plugin(X: np.ndarray, folder: Path, rows_q: np.ndarray, held: np.ndarray, method: str,
           truth_rows, truth_held, keep: bool) -> tuple[list, dict]:
    """The plugin's own paths on an index database of X (positions = pk - 1)."""
    path, figures = index_database(X, folder, method, keep)
    conn = connect(str(path))
    store = Store(conn)
    spec = store.index("photos", method)
    before = anon_rss()
    t0 = time.monotonic()
    store.refresh_ann(spec)  # loads the saved file (a no-op when this process built it)
    figures["load_s"] = time.monotonic() - t0
    if figures["load_s"] > 1:
        figures["graph_ram"] = anon_rss() - before
    figures["graph_disk"] = sum(p.stat().st_size for p in Path(str(path) + ".ann").glob("*.hnsw"))
    rows = []

    def search(spec, exact=False, allowed=None):
        return lambda q: [pk - 1 for pk, _, _ in store.knn(spec, q, K + 1, exact=exact,
                                                             allowed_item_ids=allowed)]

    def measure(name, fn, n_queries, build="-"):
        t_r, r_r = timed_queries(fn, X[rows_q[:n_queries]])
        t_h, r_h = timed_queries(fn, held[:n_queries])
        rows.append([name, build, *_stats(t_r + t_h),
                     f"{recall(r_r, truth_rows[:n_queries], rows_q[:n_queries]):.3f}",
                     f"{recall(r_h, truth_held[:n_queries]):.3f}"])
        print(f"  {rows[-1]}", file=sys.stderr, flush=True)

    measure("plugin: HNSW graph + exact re-rank (Store.knn)", search(spec), len(rows_q),
            f"{figures['build_s']:.1f}")
    graph = ann.graph_for_query(conn, spec)
    direct = graph.index

    def hnswlib_alone(q):
        direct.set_ef(graph.ef)
        return (direct.knn_query(q, k=K + 1, num_threads=1)[0][0] - 1).tolist()

    measure(f"hnswlib: the plugin's graph queried directly (ef {graph.ef})", hnswlib_alone,
            len(rows_q))
    # The same index without its graph: the sign-bit pre-filter and plain vec0.
    no_graph = dataclasses.replace(spec, params={k: v for k, v in spec.params.items() if k != "ann"})
    slow = len(rows_q) if len(X) <= LARGE else SLOW_QUERIES
    measure("plugin: sign-bit pre-filter (no graph)", search(no_graph), slow)
    measure("plain vec0 exact scan", search(no_graph, exact=True), SLOW_QUERIES)
    # Filtered: 10 nearest among a random 1% / 10% of the rows.
    rng = np.random.default_rng(5)
    for fraction in (0.01, 0.1):
        allowed_pos = np.sort(rng.choice(len(X), max(int(len(X) * fraction), K), replace=False))
        allowed = store.item_ids_for(spec, (allowed_pos + 1).tolist())
        t_h, r_h = timed_queries(search(spec, allowed=allowed), held[:60])
        truth = allowed_pos[exact_topk_many(np.asarray(X[allowed_pos]), held[:60], K)]
        short = sum(len(r) < K for r in r_h)
        rows.append([f"plugin: filtered to {fraction:.0%} of rows", "-", *_stats(t_h), "-",
                     f"{recall(r_h, truth):.3f}" + (f" ({short} short)" if short else "")])
    figures["page"] = page_json_times(path, rows_q[:60] + 1)
    figures["refresh"] = refresh_cost(store, spec, conn, X)
    conn.close()
    ann.clear_cache()
    if not keep:
        remove_database(path)
    return rows, figures


def remove_database(path: Path) -> None:
    for p in list(path.parent.glob(path.name + "*")) + [path.with_suffix(".done.json")]:
        if p.is_dir():
            for f in p.iterdir():
                f.unlink()
            p.rmdir()
        elif p.exists():
            p.unlink()


def page_json_times(path: Path, pks) -> list:
    """ms of GET /db/photos/-/similar/<pk>.json through Datasette, in this process."""
    try:
        from datasette.app import Datasette
    except ImportError:
        return []

    async def run():
        ds = Datasette([str(path)])
        await ds.invoke_startup()
        times = []
        for n, pk in enumerate(pks):
            t0 = time.perf_counter()
            response = await ds.client.get(f"/{path.stem}/photos/-/similar/{int(pk)}.json")
            if response.status_code != 200:
                print(f"  page JSON: HTTP {response.status_code}: {response.text[:200]}", file=sys.stderr)
                return []
            if n >= 2:
                times.append((time.perf_counter() - t0) * 1000)
        return times

    return asyncio.run(run())


def refresh_cost(store, spec, conn, X, batches: int = 6, rows: int = 256) -> dict:
    """Batches of `rows` new rows (near copies of existing ones), each written and
    committed as the indexer does, then, by mode: nothing (the baseline: the graph left
    to the end of a run), the graph refreshed in line (the writer waits for it: before),
    or the background refresh woken (after). Modes interleaved, each from a current
    graph; per mode the median batch write, what the writer spent on the graph per
    batch, the whole loop's time, the graph's lag when it ends and the time to catch up."""
    rng = np.random.default_rng(9)
    next_pk = [len(X) + 1]
    modes = ("none", "inline", "background")
    out = {m: {"write": [], "refresh": [], "loop": [], "lag": [], "catch_up": []} for m in modes}
    for _ in range(2):
        for mode in modes:
            store.refresh_ann(spec, save=False)
            t_loop = time.perf_counter()
            for b in range(batches):
                base = np.asarray(X[rng.integers(len(X) - rows) + np.arange(rows)])
                extra = base + 0.01 * rng.standard_normal(base.shape).astype(np.float32)
                extra /= np.linalg.norm(extra, axis=1, keepdims=True)
                pks = range(next_pk[0], next_pk[0] + rows)
                next_pk[0] += rows
                t0 = time.perf_counter()
                with conn:
                    store.write(spec, [ItemResult(pk, "b", v) for pk, v in zip(pks, extra)])
                t1 = time.perf_counter()
                if mode == "inline":
                    store.refresh_ann(spec, save=False)
                elif mode == "background":
                    store.refresh_ann(spec, background=True)
                out[mode]["write"].append(t1 - t0)
                out[mode]["refresh"].append(time.perf_counter() - t1)
            out[mode]["loop"].append(time.perf_counter() - t_loop)
            out[mode]["lag"].append(graph_lag(conn, spec))
            t0 = time.perf_counter()
            store.refresh_ann(spec, save=False)
            out[mode]["catch_up"].append(time.perf_counter() - t0)
    with conn:
        store.delete(spec, range(len(X) + 1, next_pk[0]))
    store.refresh_ann(spec, save=False)
    return {"rows": rows, "batches": batches,
            **{m: {k: float(np.median(v)) for k, v in figures.items()} for m, figures in out.items()}}


def graph_lag(conn, spec) -> int:
    """Changes committed that this process's graph has not taken in yet."""
    db_file = ann.database_file(conn, spec.vec_table)
    graph = ann._graphs.get(ann._key(db_file, spec))
    saved = [g for g, _, _ in ann.saved_files(ann.folder(db_file), spec)]
    behind = graph.generation if graph is not None else max(saved, default=0)
    return ann.log_bounds(conn, spec)[1] - behind


def indexing_runs(X: np.ndarray, new_rows: int, rounds: int = 2, base_rows: int = 10000) -> list:
    """`datasette imgsim index` (ImageIndex.build, 2 workers, cnn) adding new_rows small
    JPEGs to an index of base_rows with a graph, with the graph refreshed in the
    background during the run and at the end only; alternated, each from a copy of the
    same start. The base rows' vectors come from X (their images are never read: the
    fingerprints match); the new rows' are computed."""
    import shutil

    from common import PHOTOS, photo, variant
    from PIL import Image

    from datasette_imgsim import indexer
    from datasette_imgsim.api import ImageIndex
    from datasette_imgsim.source import blob_fingerprint

    folder = CACHE / "ann" / "indexing"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    base = folder / "base.db"
    conn = connect(str(base))
    conn.execute("create table photos (id integer primary key, image blob)")
    with conn:
        conn.executemany("insert into photos values (?, ?)",
                         ((i, f"base-{i}".encode()) for i in range(1, base_rows + 1)))
    conn.close()
    with ImageIndex.open(base, write=True, in_place=True) as images:
        spec = images.prepare_build("photos", "image", ["cnn"]).specs[0]
        with images.store.conn:
            images.store.write(spec, [ItemResult(i + 1, blob_fingerprint(f"base-{i + 1}".encode()), v)
                                      for i, v in enumerate(np.asarray(X[:base_rows]))])
        images.store.refresh_ann(images.store.index("photos", "cnn"), save=True)
    ann.clear_cache()
    rng = np.random.default_rng(4)
    sources = [photo(name) for name in PHOTOS]
    blobs = []
    for i in range(new_rows):
        out = io.BytesIO()
        Image.fromarray(variant(sources[i % len(sources)], rng, (128, 96))).save(out, "JPEG", quality=90)
        blobs.append(out.getvalue())
    results = []
    for _ in range(rounds):
        for background in (False, True):
            trial = folder / "trial.db"
            for p in folder.glob("trial.db*"):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
            shutil.copy(base, trial)
            shutil.copytree(str(base) + ".ann", str(trial) + ".ann")
            conn = connect(str(trial))
            with conn:
                conn.executemany("insert into photos values (?, ?)",
                                 ((base_rows + 1 + i, b) for i, b in enumerate(blobs)))
            conn.close()
            results.append(indexing_run(trial, background, indexer))
            ann.clear_cache()
    return results


def indexing_run(path: Path, background: bool, indexer) -> dict:
    """One run of the indexer over path, with its writer's time split by what it did."""
    from datasette_imgsim.api import ImageIndex

    spent = {"write": 0.0, "notify": 0.0, "end": 0.0, "commits": 0}
    originals = {name: getattr(indexer.Indexer, name)
                 for name in ("_write", "_refresh_graphs_in_background", "_refresh_graphs")}

    def timing(name, key):
        def wrapper(self, *args, **kwargs):
            if name == "_refresh_graphs":
                spent["lag"] = sum(graph_lag(self.store.conn, s) for s in self.specs.values())
            t0 = time.perf_counter()
            try:
                return originals[name](self, *args, **kwargs)
            finally:
                spent[key] += time.perf_counter() - t0
                spent["commits"] += name == "_write"
        return wrapper

    indexer.BACKGROUND_REFRESH = background
    for name, key in (("_write", "write"), ("_refresh_graphs_in_background", "notify"),
                      ("_refresh_graphs", "end")):
        setattr(indexer.Indexer, name, timing(name, key))
    try:
        t0 = time.monotonic()
        with ImageIndex.open(path, write=True, in_place=True) as images:
            summary = images.build("photos", "image", ["cnn"], workers=2)
        seconds = time.monotonic() - t0
    finally:
        for name, fn in originals.items():
            setattr(indexer.Indexer, name, fn)
        indexer.BACKGROUND_REFRESH = True
    threads = [t.name for t in threading.enumerate() if t.name.startswith("imgsim-graph-")]
    return {"background": background, "indexed": summary.indexed, "seconds": seconds,
            "write": spent["write"] - spent["notify"], "notify": spent["notify"],
            "end": spent["end"], "commits": spent["commits"], "lag": spent.get("lag", 0),
            "threads_left": threads}


def _stats(times):
    return f"{percentile(times, 50):.2f}", f"{percentile(times, 95):.2f}"


def run_collection(label: str, X: np.ndarray, held: np.ndarray, rows_q: np.ndarray, folder: Path,
                   method: str, with_libraries: bool, keep: bool, deadline: float) -> tuple[list, dict]:
    t0 = time.monotonic()
    truth_rows = exact_topk_many(X, X[rows_q], K + 1)
    truth_held = exact_topk_many(X, held, K)
    print(f"  {label}: exact answers in {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    out, notes = [], []
    slow = len(rows_q) if len(X) <= LARGE else SLOW_QUERIES * 5
    t_r, _ = timed_queries(lambda q: exact_topk(X, q[None], K + 1)[0], X[rows_q[:slow]])
    out.append([label, "numpy exact (X @ q)", "-", *_stats(t_r), "1.000", "1.000"])
    # The plugin first: at 1M it is what the run is for, and the libraries come after
    # it within the time left (--budget).
    rows, extras = plugin(X, folder, rows_q, held, method, truth_rows, truth_held, keep)
    out += [[label, *r] for r in rows]
    print(f"  {label}: {rows[-2:]}\n  {label}: {json.dumps(extras)}", file=sys.stderr, flush=True)
    for name, build in (libraries(X) if with_libraries else []):
        if (len(X) > LARGE and name not in LARGE_LIBRARIES) or time.monotonic() > deadline:
            notes.append(name)
            continue
        t0 = time.monotonic()
        search = build()
        build_s = time.monotonic() - t0
        t_r, r_r = timed_queries(lambda q: search(q, K + 1), X[rows_q])
        t_h, r_h = timed_queries(lambda q: search(q, K), held)
        out.append([label, name, f"{build_s:.1f}", *_stats(t_r + t_h),
                    f"{recall(r_r, truth_rows, rows_q):.3f}", f"{recall(r_h, truth_held):.3f}"])
        search = None  # frees the library's index (and its copy of the vectors)
        gc.collect()
        print(f"  {label} {name}: {out[-1][2:]}", file=sys.stderr, flush=True)
    extras["not_built"] = notes
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


def print_tables(args, rows, notes, indexing, seconds):
    print(f"\nMachine: {machine()}")
    print(f"Command: python bench/ann_speed.py --sizes {args.sizes} --crops {args.crops} "
          f"--queries {args.queries}\n")
    print(table(["collection", "method", "build s", "p50 ms", "p95 ms", "recall@10 rows",
                 "recall@10 held-out"], rows))
    for label, _, e in notes:
        if e["not_built"]:
            print(f"\n{label}: not built (over {LARGE:,} rows each takes 2-5 min per 100k rows "
                  f"on 2 cores and its own copy of the vectors, or past --budget): "
                  f"{', '.join(e['not_built'])}")
    print()
    print(table(["collection", "vec0 write s", "graph build s", "graph file per 100k",
                 "graph RAM per 100k", "index db per 100k", "page JSON p50 / p95 ms"],
                [[label, f"{e['write_s']:.1f}", f"{e['build_s']:.1f}",
                  f"{e['graph_disk'] * 100_000 / n / 1e6:.0f} MB",
                  f"{e['graph_ram'] * 100_000 / n / 1e6:.0f} MB",
                  f"{e['db_disk'] * 100_000 / n / 1e6:.0f} MB",
                  " / ".join(_stats(e["page"])) if e["page"] else "-"] for label, n, e in notes]))
    print()
    print(table(["collection", "graph refresh", "batch write s (rows)", "writer's graph s per batch",
                 "/ write", "loop s (throughput vs none)", "graph lag at end", "catch-up s"],
                [[label, mode, f"{r[mode]['write']:.3f} ({r['rows']})", f"{r[mode]['refresh']:.4f}",
                  f"{r[mode]['refresh'] / r[mode]['write']:.1%}",
                  f"{r[mode]['loop']:.2f} ({r['none']['loop'] / r[mode]['loop']:.2f}x)",
                  f"{r[mode]['lag']:.0f} of {r['rows'] * r['batches']}", f"{r[mode]['catch_up']:.2f}"]
                 for label, n, e in notes for r in [e["refresh"]]
                 for mode in ("none", "inline", "background")]))
    if indexing:
        print(f"\n`datasette imgsim index` adding {indexing[0]['indexed']:,} cnn rows (128x96 JPEGs, "
              "2 workers) to a 10,000-row index with its graph:")
        end_only = [r["indexed"] / r["seconds"] for r in indexing if not r["background"]]
        print(table(["graph refresh", "img/s (vs end only)", "commits", "write s", "writer's graph s",
                     "/ write", "lag at the end", "end-of-run refresh s", "threads left"],
                    [["background" if r["background"] else "end only",
                      f"{r['indexed'] / r['seconds']:.1f} "
                      f"({r['indexed'] / r['seconds'] / np.median(end_only):.2f}x)",
                      r["commits"], f"{r['write']:.2f}", f"{r['notify']:.4f}",
                      f"{r['notify'] / max(r['write'], 1e-9):.1%}", r["lag"], f"{r['end']:.2f}",
                      len(r["threads_left"])] for r in indexing]))
    print(f"\n({seconds:.0f} s)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--crops", type=int, default=12000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--no-libraries", action="store_true")
    parser.add_argument("--indexing", type=int, default=1500,
                        help="new rows per indexer run (background refresh vs end only); 0: none")
    parser.add_argument("--keep", action="store_true",
                        help="keep (and reuse) the index databases and graphs in the cache")
    parser.add_argument("--budget", type=float, default=6 * 3600,
                        help="seconds; no library is built after")
    args = parser.parse_args(argv)
    started = time.monotonic()
    deadline = started + args.budget
    seeds = real_embeddings()
    rows, notes, indexing = [], [], []
    folder = CACHE / "ann"
    folder.mkdir(parents=True, exist_ok=True)
    for n in [int(s) for s in args.sizes.split(",") if s]:
        X, held, rows_q = cnn_vectors(n, args.queries, seeds)
        label = f"cnn {n:,}"
        out, extras = run_collection(label, X, held, rows_q, folder, "cnn",
                                     not args.no_libraries, args.keep, deadline)
        rows += out
        notes.append((label, n, extras))
        if args.indexing > 0 and n >= 10000 and not indexing:
            indexing = indexing_runs(X, args.indexing)
        del X
        gc.collect()
    for name in ("hog", "histogram"):
        if args.crops <= 0:
            continue
        X = feature_vectors(name, args.crops + args.queries)
        X = (X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)).astype(np.float32)
        X, held, rows_q = split_in_memory(X, args.queries)
        label = f"{name} {args.crops:,}"
        out, extras = run_collection(label, X, held, rows_q, folder, name,
                                     not args.no_libraries, args.keep, deadline)
        rows += out
        notes.append((label, len(X), extras))
    print_tables(args, rows, notes, indexing, time.monotonic() - started)


if __name__ == "__main__":
    main()
