"""Query latency at scale: the plugin's KNN against sqlite-vec's float scan and numpy.

    python bench/query_speed.py                      # 10k and 100k vectors
    python bench/query_speed.py --sizes 10000,100000,1000000   # + 1M (~12 GB disk, ~11 GB RAM:
                                                               # vectors + the HNSW graph)
    python bench/query_speed.py --libraries          # + hnswlib, usearch, faiss beside
    python bench/query_speed.py --sizes 1000000 --libraries hnswlib   # 1M: hnswlib only

For each size it builds (once, cached under $IMGSIM_BENCH_CACHE, default
/tmp/imgsim-bench) a photos table with a 1280-d `cnn` index and a 64-bit `phash`
index. The vectors are real EfficientNet embeddings of crops of scikit-image's
photos plus noise at two scales (events, and bursts of 10 shots in each), clipped
at 0 and unit length as the cnn method stores them; the phash codes are 64 random
hyperplane bits of the same vectors, so they cluster the same way.

Then, query by query, interleaved so that load from other processes hits all of
them alike, it times:

- numpy: exact brute force on the same vectors held in memory (X @ q + argpartition),
  with its default BLAS threads and (if threadpoolctl is installed) with one;
- vec0 float: sqlite-vec's exact KNN scan of the float vec0 table;
- similar_images(): the plugin's search as the SQL function and pages run it,
  including the pk lookups: candidates from the HNSW graph kept beside the index
  (store/ann.py, built here by Store.refresh_ann once the rows are written), re-ranked
  by exact distance;
- pre-filter only: the same search without the graph (the sign-bit pre-filter + exact
  re-rank every query used before, and still the fallback while the graph is stale);
- held-out: similar_to_vector() for vectors of the same collection that are not in
  the index (upload search, similar_to_image()), with and without the graph;
- phash: the same for the 64-bit index (a vec0 bit scan);
- page JSON and page HTML: GET /db/photos/-/similar/<pk>.json and the page itself
  through Datasette (the thumbnails it shows are separate requests),

and prints p50/p95 latencies, the speed-up over each baseline, recall@10 against
numpy's exact answer, and the index's size on disk per 100k images. The run stops
starting new sizes after --budget seconds.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import CACHE, collection, machine, percentile, real_embeddings, table  # noqa: E402

from datasette_imgsim.search import similar_to_row, similar_to_vector  # noqa: E402
from datasette_imgsim.store import ItemResult, Store, connect, projection  # noqa: E402

BATCH = 4096
NAMES = ("numpy", "numpy, 1 thread", "vec0 float", "similar_images()", "pre-filter only",
         "held-out", "held-out, pre-filter only", "phash", "page JSON", "page HTML")
HELD_OUT = 100  # vectors of each collection left out of the index, as query images

try:  # numpy's BLAS threads can be slower than one on a busy machine: time both
    from threadpoolctl import threadpool_limits
except ImportError:
    threadpool_limits = None


def build(path: Path, n: int, seeds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The benchmark database (reused if complete), its cnn vectors in pk order, and
    HELD_OUT vectors of the same collection that are not in it."""
    vectors = np.empty((n + HELD_OUT, 1280), np.float32)
    start = 0
    for block in collection(n + HELD_OUT, seeds):
        vectors[start:start + len(block)] = block
        start += len(block)
    held = np.random.default_rng(11).choice(n + HELD_OUT, HELD_OUT, replace=False)
    keep = np.ones(n + HELD_OUT, bool)
    keep[held] = False
    held_out = vectors[held]
    # Compacted in place (each kept row moves forward, a block at a time): at 1M a copy
    # of the kept rows would hold a second 5 GB.
    kept = np.flatnonzero(keep)
    for s in range(0, n, 65536):
        block = kept[s:s + 65536]
        vectors[s:s + len(block)] = vectors[block]
    vectors = vectors[:n]
    done = path.with_suffix(".v2.done")
    if done.exists() and path.exists():
        return vectors, held_out
    for p in (path, done):
        if p.exists():
            p.unlink()
    conn = connect(str(path))
    conn.execute("pragma journal_mode = wal")
    conn.execute("create table photos (id integer primary key, path text)")
    conn.executemany("insert into photos (id, path) values (?, ?)",
                     ((i + 1, f"img/{i + 1}.jpg") for i in range(n)))
    conn.commit()
    store = Store(conn)
    cnn, _ = store.create_index("photos", "path", "id", str(path.parent), "cnn", "cosine", 1280, "float")
    phash, _ = store.create_index("photos", "path", "id", str(path.parent), "phash", "hamming", 64, "bit")
    planes = projection(1280, 64, 99)
    started = time.monotonic()
    for i in range(0, n, BATCH):
        chunk = vectors[i:i + BATCH]
        codes = np.packbits(chunk @ planes > 0, axis=1)
        with conn:
            store.write(cnn, [ItemResult(i + j + 1, "bench", v) for j, v in enumerate(chunk)])
            store.write(phash, [ItemResult(i + j + 1, "bench", c) for j, c in enumerate(codes)])
        print(f"\r  building {path.name}: {min(i + BATCH, n):,}/{n:,} rows "
              f"({time.monotonic() - started:.0f} s)", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    conn.execute("pragma wal_checkpoint(truncate)")
    conn.close()
    done.touch()
    return vectors, held_out


def table_bytes(conn, name: str) -> int:
    """Payload bytes of a table: dbstat's page sizes where SQLite has it, else the sum
    of its values' lengths (a lower bound, within a few % for tables of BLOBs)."""
    try:
        return conn.execute("select sum(pgsize) from dbstat where name = ?", (name,)).fetchone()[0] or 0
    except Exception:  # SQLite built without dbstat
        columns = [row[1] for row in conn.execute(f'pragma table_info("{name}")')]
        if not columns:
            return 0
        total = " + ".join(f'coalesce(length("{c}"), 0)' for c in columns)
        return conn.execute(f'select coalesce(sum({total}), 0) from "{name}"').fetchone()[0]


def sizes_on_disk(conn, prefixes: dict[str, str]) -> dict[str, int]:
    """Bytes of the tables (and their vec0 shadow tables) whose names start with each prefix."""
    names = [name for (name,) in conn.execute(
        "select name from sqlite_master where type = 'table' and sql not like 'CREATE VIRTUAL%'")]
    out = {}
    for label, prefix in prefixes.items():
        out[label] = sum(table_bytes(conn, name) for name in names if name.startswith(prefix)
                         and not (label.endswith("floats") and "_bits" in name))
    return out


def numpy_exact(X: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    scores = X @ q
    top = np.argpartition(-scores, k)[:k]
    return top[np.argsort(-scores[top])]


async def page_client(path: Path):
    """A Datasette client for the benchmark database, if the similar page exists."""
    try:
        from datasette.app import Datasette

        from datasette_imgsim.web import similar_page  # noqa: F401
    except ImportError:
        return None
    ds = Datasette([str(path)])
    await ds.invoke_startup()
    return ds


def library_rows(X: np.ndarray, cases: list, only: str = "all") -> list:
    """The in-process ANN libraries of bench/ann_speed.py built on the same vectors and
    asked the same queries: cases are (pk, exact 10 of the row, held-out vector, its
    exact 10); only: "all", or comma-separated parts of their names ("hnswlib").
    Rows (name, build s, p50 ms, p95 ms, recall rows, recall held-out)."""
    from ann_speed import libraries

    wanted = None if only == "all" else [part.strip() for part in only.split(",")]
    out = []
    for name, build in libraries(X):
        if wanted and not any(part in name for part in wanted):
            continue
        t = time.monotonic()
        search = build()
        built = getattr(search, "build_seconds", time.monotonic() - t)
        times, rows, held = [], [], []
        for pk, truth, h, held_truth in cases:
            t0 = time.perf_counter()
            found = {int(j) + 1 for j in search(X[pk - 1], 11)}
            times.append((time.perf_counter() - t0) * 1000)
            rows.append(len(set(truth) & (found - {pk})) / 10)
            held.append(len(held_truth & {int(j) + 1 for j in search(h, 10)}) / 10)
        out.append((name, built, percentile(times, 50), percentile(times, 95),
                    float(np.mean(rows)), float(np.mean(held))))
    return out


def run_size(n: int, queries: int, seeds: np.ndarray, rng: np.random.Generator,
             with_libraries: str = "") -> dict:
    path = CACHE / f"query_{n}.db"
    CACHE.mkdir(parents=True, exist_ok=True)
    t = time.monotonic()
    X, held_out = build(path, n, seeds)
    build_seconds = time.monotonic() - t
    conn = connect(str(path))
    store = Store(conn)
    cnn = store.index("photos", "cnn")
    t = time.monotonic()
    graph = store.refresh_ann(cnn, save=True)  # builds the graph if its file is missing
    graph_seconds = time.monotonic() - t
    cnn = store.index("photos", "cnn")
    graph_disk = sum(f.stat().st_size for f in Path(str(path) + ".ann").glob("*.hnsw"))
    ds = asyncio.run(page_client(path))
    loop = asyncio.new_event_loop()
    times: dict[str, list] = {name: [] for name in NAMES}
    recalls = {"similar_images()": [], "pre-filter only": [], "held-out": [],
               "held-out, pre-filter only": []}
    pks = rng.choice(n, size=queries + 2, replace=False) + 1
    cases = []  # (pk, exact 10, held-out vector, its exact 10): the libraries' queries
    # Two warm-up queries: first reads from disk, the projection, the routes.
    for i, pk in enumerate(pks):
        pk = int(pk)
        q = X[pk - 1]
        row = {}
        t0 = time.perf_counter()
        exact = [int(i) + 1 for i in numpy_exact(X, q, 11) if int(i) + 1 != pk][:10]
        row["numpy"] = time.perf_counter() - t0
        if threadpool_limits is not None:
            with threadpool_limits(1, "blas"):
                t0 = time.perf_counter()
                numpy_exact(X, q, 11)
                row["numpy, 1 thread"] = time.perf_counter() - t0
        vector = store.vector(cnn, store.item_id(cnn, pk))
        t0 = time.perf_counter()
        store.knn(cnn, vector, 11, exact=True)
        row["vec0 float"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        _, found = similar_to_row(store, "photos", pk, 10, "cnn")
        row["similar_images()"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        prefiltered = store.backend._knn_prefiltered(cnn, vector, 11)
        row["pre-filter only"] = time.perf_counter() - t0
        h = held_out[i % len(held_out)]
        held_exact = {int(j) + 1 for j in numpy_exact(X, h, 10)}
        t0 = time.perf_counter()
        held_found = similar_to_vector(store, cnn, h, 10)
        row["held-out"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        held_pre = store.backend._knn_prefiltered(cnn, h, 10)
        row["held-out, pre-filter only"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        similar_to_row(store, "photos", pk, 10, "phash")
        row["phash"] = time.perf_counter() - t0
        if ds is not None:
            t0 = time.perf_counter()
            response = loop.run_until_complete(
                ds.client.get(f"/{path.stem}/photos/-/similar/{pk}.json?method=cnn"))
            row["page JSON"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            html = loop.run_until_complete(
                ds.client.get(f"/{path.stem}/photos/-/similar/{pk}?method=cnn"))
            row["page HTML"] = time.perf_counter() - t0
            for name, got in (("page JSON", response), ("page HTML", html)):
                if got.status_code != 200:
                    print(f"  {name}: HTTP {got.status_code}: {got.text[:200]}", file=sys.stderr)
                    ds = None
        if i < 2:
            continue
        cases.append((pk, exact, h, held_exact))
        for name, seconds in row.items():
            times[name].append(seconds * 1000)
        recalls["similar_images()"].append(len(set(exact) & {r["pk"] for r in found}) / 10)
        pre_pks = store._pks([i for i, _ in prefiltered + held_pre])  # item ids -> pks
        recalls["pre-filter only"].append(
            len(set(exact) & {pre_pks[i] for i, _ in prefiltered} - {pk}) / 10)
        recalls["held-out"].append(len(held_exact & {r["pk"] for r in held_found}) / 10)
        recalls["held-out, pre-filter only"].append(
            len(held_exact & {pre_pks[i] for i, _ in held_pre}) / 10)
    loop.close()
    disk = sizes_on_disk(conn, {"cnn floats": "_imgsim_photos_cnn", "cnn bits": "_imgsim_photos_cnn_bits",
                                "phash": "_imgsim_photos_phash", "_imgsim_items": "_imgsim_items"})
    conn.close()
    found_libraries = library_rows(X, cases, with_libraries) if with_libraries else []
    return {"n": n, "times": times, "recall": {k: float(np.mean(v)) for k, v in recalls.items()},
            "libraries": found_libraries,
            "disk": disk, "build_seconds": build_seconds, "graph_seconds": graph_seconds,
            "graph_disk": graph_disk, "graph": graph}


def other_method_sizes() -> dict[str, tuple[int, int]]:
    """Float and bit table bytes per 100k rows for histogram (512-d) and hog (1764-d),
    from 10k random vectors (size does not depend on the values)."""
    out = {}
    path = CACHE / "sizes.db"
    if path.exists():
        path.unlink()
    conn = connect(str(path))
    conn.execute("create table t (id integer primary key)")
    store = Store(conn)
    rng = np.random.default_rng(0)
    for method, dims in (("histogram", 512), ("hog", 1764)):
        spec, _ = store.create_index("t", "c", "id", None, method, "cosine", dims, "float")
        for i in range(0, 10_000, BATCH):
            with conn:
                store.write(spec, [ItemResult(j + 1, "x", rng.random(dims, dtype=np.float32))
                                   for j in range(i, min(i + BATCH, 10_000))])
        sizes = sizes_on_disk(conn, {"floats": spec.vec_table, "bits": spec.quantized["table"]})
        out[method] = (sizes.get("floats", 0) * 10, sizes.get("bits", 0) * 10)
    conn.close()
    path.unlink()
    return out


def mb(n: float) -> str:
    return f"{n / 1e6:.0f} MB" if n >= 10e6 else f"{n / 1e6:.1f} MB"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated index sizes")
    parser.add_argument("--queries", type=int, default=60, help="timed queries per size")
    parser.add_argument("--budget", type=float, default=1800, help="seconds; no new size starts after")
    parser.add_argument("--libraries", nargs="?", const="all", default="",
                        help="also build hnswlib, usearch and faiss (bench/ann_speed.py's settings) "
                             "on the same vectors and time the same queries (minutes per 100k); "
                             "--libraries hnswlib,faiss builds only those")
    args = parser.parse_args(argv)
    started = time.monotonic()
    seeds = real_embeddings()
    rng = np.random.default_rng(7)
    results = []
    for n in [int(s) for s in args.sizes.split(",")]:
        if time.monotonic() - started > args.budget:
            print(f"skipping {n:,}: over the {args.budget:.0f} s budget", file=sys.stderr)
            continue
        results.append(run_size(n, args.queries, seeds, rng, args.libraries))

    print(f"\nMachine: {machine()}")
    print(f"Command: python bench/query_speed.py --sizes {args.sizes} --queries {args.queries}"
          + (f" --libraries {args.libraries}" if args.libraries else "") + "\n")
    rows = []
    for r in results:
        t = r["times"]
        ours = t["similar_images()"]
        for name in NAMES:
            if not t[name]:
                if name.startswith("page"):
                    rows.append([f"{r['n']:,}", name, "not measured (no similar page)", "", ""])
                continue
            p50, p95 = percentile(t[name], 50), percentile(t[name], 95)
            ratio = ("" if name in ("similar_images()", "phash", "page JSON", "page HTML", "held-out",
                                    "held-out, pre-filter only")
                     else f"{p50 / percentile(ours, 50):.1f}x")
            extra = f"recall@10 {r['recall'][name]:.3f}" if name in r["recall"] else ""
            if ratio and extra:
                ratio = f"{ratio}, {extra}"
            rows.append([f"{r['n']:,}", name, f"{p50:.1f}", f"{p95:.1f}", ratio or extra])
    print(table(["vectors", "query", "p50 ms", "p95 ms", "similar_images() speed-up / recall"], rows))
    library_table = [[f"{r['n']:,}", name, f"{built:.0f}", f"{p50:.2f}", f"{p95:.2f}",
                      f"{rows_recall:.3f} / {held_recall:.3f}"]
                     for r in results for name, built, p50, p95, rows_recall, held_recall
                     in r["libraries"]]
    if library_table:
        print("\nIn-process ANN libraries on the same vectors and queries (one thread a query):")
        print(table(["vectors", "library", "build s", "p50 ms", "p95 ms",
                     "recall@10 rows / held-out"], library_table))
    if results:
        print("\nHNSW graph (M 16, construction ef 200, search ef 48) beside the index:")
        print(table(["vectors", "build s (2 threads)", "file per 100k images"],
                    [[f"{r['n']:,}", f"{r['graph_seconds']:.0f}",
                      mb(r["graph_disk"] * 100_000 / r["n"])] for r in results]))
        print("\nIndex size on disk per 100k images:")
        size_rows = []
        r = results[-1]
        per = 100_000 / r["n"]
        d = r["disk"]
        if d:
            size_rows.append(["cnn (1280 floats + 1280 bits)", mb(d["cnn floats"] * per), mb(d["cnn bits"] * per)])
            size_rows.append(["phash (64 bits)", mb(d["phash"] * per), "-"])
            for method, (floats, bits) in other_method_sizes().items():
                size_rows.append([f"{method}", mb(floats), mb(bits)])
            size_rows.append(["_imgsim_items (per index)", mb(d["_imgsim_items"] * per / 2), ""])
            print(table(["method", "vectors", "bit pre-filter"], size_rows))
    print(f"\n({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
