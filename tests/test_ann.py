"""The HNSW graph beside an index (store/ann.py): derived from the vec0 rows, never
answering for a state it does not reflect, and surviving kill -9 anywhere."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from datasette_imgsim.store import ItemResult, MEMORY, Store, ann, connect

DIMS = 96


@pytest.fixture(autouse=True)
def small_graphs(monkeypatch):
    monkeypatch.setattr(ann, "MIN_ROWS", 50)
    ann.clear_cache()
    yield
    ann.clear_cache()


def clustered(n, seed=0, dims=DIMS):
    rng = np.random.default_rng(seed)
    centres = rng.random((max(n // 10, 1), dims)).astype(np.float32)
    x = np.repeat(centres, 10, axis=0)[:n] + 0.05 * rng.random((n, dims)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_store(path, n=400, seed=0):
    conn = connect(str(path))
    store = Store(conn)
    spec, _ = store.create_index("photos", "path", "id", None, "cnn", "cosine", DIMS, "float")
    vectors = clustered(n, seed)
    with conn:
        store.write(spec, [ItemResult(i + 1, "f", v) for i, v in enumerate(vectors)])
    return store, store.index("photos", "cnn"), vectors


def same_as_exact(store, spec, query, k=10):
    fast = store.knn(spec, query, k)
    exact = store.knn(spec, query, k, exact=True)
    assert [pk for pk, _, _ in fast] == [pk for pk, _, _ in exact]
    assert [d for _, d, _ in fast] == pytest.approx([d for _, d, _ in exact], abs=1e-6)
    return fast


def test_graph_built_saved_and_used(tmp_path):
    store, spec, vectors = make_store(tmp_path / "i.db")
    assert ann.graph_for_query(store.conn, spec) is None  # nothing built yet: pre-filter
    info = store.refresh_ann(spec, save=True)
    assert info["built"] and info["generation"] == 400 and info["saved"] == 400
    files = list((tmp_path / "i.db.ann").iterdir())
    assert len(files) == 1 and files[0].name.startswith(spec.vec_table + ".")
    assert ann.graph_for_query(store.conn, spec) is not None
    for q in (0, 57, 399):
        assert same_as_exact(store, spec, vectors[q])[0][0] == q + 1
    # The log the file covers was pruned to its newest row.
    assert store.conn.execute(f"select count(*) from {spec.vec_table}_ann_log").fetchone()[0] == 1


def test_other_process_loads_file_and_catches_up(tmp_path):
    store, spec, vectors = make_store(tmp_path / "i.db")
    store.refresh_ann(spec, save=True)
    new = clustered(20, seed=5)
    with store.conn:
        store.write(spec, [ItemResult(1000 + i, "f", v) for i, v in enumerate(new)])
        store.delete(spec, [1, 2])
    ann.clear_cache()  # as a fresh reader process
    reader = Store(connect(str(tmp_path / "i.db"), readonly=True))
    rspec = reader.index("photos", "cnn")
    view = ann.graph_for_query(reader.conn, rspec)
    # Loaded at 400; the 22 changes since are searched beside it, not applied to it.
    assert isinstance(view, ann.GraphView) and view.delta.upto == 422
    assert view.graph.generation == 400 and view.delta.changed == 22
    assert same_as_exact(reader, rspec, new[3])[0][0] == 1003
    assert 1 not in [pk for pk, _, _ in reader.knn(rspec, vectors[0], 10)]
    assert view.graph.generation == 400  # queries never change the graph


def test_too_stale_falls_back_until_refreshed(tmp_path, monkeypatch):
    store, spec, vectors = make_store(tmp_path / "i.db")
    store.refresh_ann(spec, save=True)
    monkeypatch.setattr(ann, "DELTA_ROWS", 5)
    new = clustered(30, seed=7)
    with store.conn:
        store.write(spec, [ItemResult(2000 + i, "f", v) for i, v in enumerate(new)])
    assert ann.graph_for_query(store.conn, spec) is None
    assert same_as_exact(store, spec, new[0])[0][0] == 2000  # the pre-filter finds it
    info = store.refresh_ann(spec)
    assert not info["built"] and info["generation"] == 430
    assert ann.graph_for_query(store.conn, spec) is not None
    assert same_as_exact(store, spec, new[0])[0][0] == 2000


def test_uncommitted_changes_never_reach_the_graph(tmp_path):
    store, spec, vectors = make_store(tmp_path / "i.db")
    store.refresh_ann(spec, save=True)
    new = clustered(3, seed=9)
    store.conn.execute("begin")
    store.write(spec, [ItemResult(3000, "f", new[0])])
    store.delete(spec, [5])
    # Inside the writer's transaction: its own rows are seen (through the pre-filter).
    assert ann.graph_for_query(store.conn, spec) is None
    assert store.knn(spec, new[0], 1)[0][0] == 3000
    store.conn.execute("rollback")
    graph = ann.graph_for_query(store.conn, spec)
    assert graph is not None and graph.generation == 400
    assert 3000 not in [pk for pk, _, _ in store.knn(spec, new[0], 10)]
    assert same_as_exact(store, spec, vectors[4])[0][0] == 5


def test_queries_cover_changes_the_graph_lacks(tmp_path):
    store, spec, vectors = make_store(tmp_path / "i.db", n=2000)
    store.refresh_ann(spec, save=True)
    new = clustered(30, seed=11)
    far = clustered(1, seed=12)[0]
    with store.conn:
        store.write(spec, [ItemResult(5000 + i, "f", v) for i, v in enumerate(new)])
        store.delete(spec, [7, 8, 9])
        # The newest row again, with another vector: its item id is reused, so the
        # graph holds that id with the old vector.
        store.write(spec, [ItemResult(5029, "f", far)])
    view = ann.graph_for_query(store.conn, spec)
    assert isinstance(view, ann.GraphView) and view.graph.generation == 2000
    for q in new[:5]:
        assert same_as_exact(store, spec, q)[0][0] in range(5000, 5030)
    assert same_as_exact(store, spec, far)[0][:2] == (5029, pytest.approx(0.0, abs=1e-5))
    assert not {7, 8, 9} & {pk for pk, _, _ in store.knn(spec, vectors[7], 20)}
    # Filtered through the graph (more allowed rows than are re-ranked outright).
    allowed = store.item_ids_for(spec, list(range(5000, 5030)) + list(range(100, 700)))
    found = store.knn(spec, new[0], 10, allowed_item_ids=allowed)
    assert found[0][0] == 5000 and {i for *_, i in found} <= allowed
    assert view.graph.generation == 2000  # queries never change the graph


def test_end_of_run_refresh_saves_only_when_readers_would_scan_many(tmp_path, monkeypatch):
    store, spec, vectors = make_store(tmp_path / "i.db")
    store.refresh_ann(spec, save=True)
    with store.conn:
        store.write(spec, [ItemResult(6000 + i, "f", v) for i, v in enumerate(clustered(10, 4))])
    assert store.refresh_ann(spec)["saved"] == 400  # 10 changes: left to the delta
    ann.clear_cache()
    reader = Store(connect(str(tmp_path / "i.db"), readonly=True))
    rspec = reader.index("photos", "cnn")
    assert isinstance(ann.graph_for_query(reader.conn, rspec), ann.GraphView)
    assert same_as_exact(reader, rspec, clustered(10, 4)[2])[0][0] == 6002
    monkeypatch.setattr(ann, "SAVE_AFTER", 10)
    assert store.refresh_ann(spec)["saved"] == 410


def refresh_threads() -> list:
    return [t for t in threading.enumerate() if t.name.startswith("imgsim-graph-") and t.is_alive()]


def wait_for(condition, seconds=30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_background_refresh_applies_commits_off_the_writer(tmp_path, monkeypatch):
    monkeypatch.setattr(ann, "BACKGROUND_IDLE_SECONDS", 0.5)
    store, spec, vectors = make_store(tmp_path / "i.db")
    store.refresh_ann(spec, save=True)
    graph = ann.graph_for_query(store.conn, spec)
    new = clustered(100, seed=13)
    with store.conn:
        store.write(spec, [ItemResult(7000 + i, "f", v) for i, v in enumerate(new)])
    assert store.refresh_ann(spec, background=True) == {"graph": True, "background": True}
    assert wait_for(lambda: graph.generation == 500)
    assert ann.graph_for_query(store.conn, spec) is graph  # current again: no delta
    assert same_as_exact(store, spec, new[40])[0][0] == 7040
    # Uncommitted rows never reach the graph, even with the thread woken meanwhile.
    store.conn.execute("begin")
    store.write(spec, [ItemResult(8000, "f", clustered(1, seed=14)[0])])
    store.refresh_ann(spec, background=True)
    time.sleep(0.3)
    store.conn.execute("rollback")
    assert graph.generation == 500
    assert wait_for(lambda: not refresh_threads())  # idle: the thread ends


def test_reader_too_far_behind_catches_up_in_background(tmp_path, monkeypatch):
    monkeypatch.setattr(ann, "DELTA_ROWS", 5)
    monkeypatch.setattr(ann, "BACKGROUND_IDLE_SECONDS", 0.5)
    store, spec, vectors = make_store(tmp_path / "i.db")
    store.refresh_ann(spec, save=True)
    new = clustered(30, seed=16)
    with store.conn:
        store.write(spec, [ItemResult(9500 + i, "f", v) for i, v in enumerate(new)])
    ann.clear_cache()  # as a reader process, with the saved file 30 changes behind
    reader = Store(connect(str(tmp_path / "i.db"), readonly=True))
    rspec = reader.index("photos", "cnn")
    assert ann.graph_for_query(reader.conn, rspec) is None  # the pre-filter meanwhile
    assert reader.knn(rspec, new[0], 1)[0][0] == 9500
    assert wait_for(lambda: ann.graph_for_query(reader.conn, rspec) is not None)
    assert ann.graph_for_query(reader.conn, rspec).generation == 430
    assert same_as_exact(reader, rspec, new[7])[0][0] == 9507
    assert wait_for(lambda: not refresh_threads())


def test_refresh_stops_the_background_thread(tmp_path, monkeypatch):
    monkeypatch.setattr(ann, "BACKGROUND_IDLE_SECONDS", 60)
    store, spec, vectors = make_store(tmp_path / "i.db")
    store.refresh_ann(spec, save=True)
    with store.conn:
        store.write(spec, [ItemResult(9000 + i, "f", v) for i, v in enumerate(clustered(50, 15))])
    store.refresh_ann(spec, background=True)
    assert refresh_threads()
    info = store.refresh_ann(spec)
    assert info["generation"] == 450 and not refresh_threads()


def test_background_step_never_moves_the_graph_back(tmp_path):
    """A query's GraphView.caught_up (batch users: .index/.live) brings the graph to its
    delta's generation between the background step reading the graph and taking its lock:
    the step must see that, not set the older generation it had planned."""
    from datasette_imgsim.store.ann_background import Background

    store, spec, vectors = make_store(tmp_path / "i.db")
    store.refresh_ann(spec, save=True)
    new = clustered(100, seed=17)
    with store.conn:
        store.write(spec, [ItemResult(9700 + i, "f", v) for i, v in enumerate(new)])
    view = ann.graph_for_query(store.conn, spec)
    assert isinstance(view, ann.GraphView) and (view.graph.generation, view.delta.upto) == (400, 500)
    graph, real = view.graph, view.graph.lock

    class CaughtUpFirst:  # the interleaving, made deterministic: the query goes first
        def __enter__(self):
            graph.lock = real
            view.caught_up()
            return real.__enter__()

        def __exit__(self, *exc):
            return real.__exit__(*exc)

    graph.lock = CaughtUpFirst()
    db = str(tmp_path / "i.db")
    worker = Background(ann._key(db, spec), db, spec, save=False)
    conn = connect(db, readonly=True)
    worker.step(conn)  # had planned 400 -> 432
    assert graph.lock is real and graph.generation == 500 and worker.applied == 0
    assert ann.graph_for_query(store.conn, spec) is graph
    assert not worker.step(conn)  # nothing left to apply
    conn.close()
    assert same_as_exact(store, spec, new[60])[0][0] == 9760


def test_indexer_refreshes_in_background_and_leaves_no_thread(tmp_path, monkeypatch):
    from datasette_imgsim import indexer
    from tests.helpers import index_photos, jpeg_bytes, photo

    monkeypatch.setattr(indexer, "WRITE_ROWS", 8)  # many commits, each waking the thread
    db = tmp_path / "photos.db"
    pixels = photo("astronaut")
    rng = np.random.default_rng(0)

    def add_rows(first, count):
        conn = connect(str(db))
        conn.execute("create table if not exists photos (id integer primary key, image blob)")
        for pk in range(first, first + count):
            y, x = rng.integers(0, 400, 2)
            conn.execute("insert into photos values (?, ?)", (pk, jpeg_bytes(pixels[y:y + 96, x:x + 96])))
        conn.commit()
        conn.close()

    add_rows(1, 60)
    index_photos(db, "histogram", column="image")
    add_rows(61, 40)
    index_photos(db, "histogram", column="image")
    assert not refresh_threads()
    ann.clear_cache()
    store = Store(connect(str(db), readonly=True))
    spec = store.index("photos", "histogram")
    assert ann.graph_for_query(store.conn, spec) is not None
    for pk in (3, 70, 100):
        q = store.vector(spec, store.item_id(spec, pk))
        assert same_as_exact(store, spec, q)[0][0] == pk


def test_reused_item_id_keeps_the_live_count(tmp_path):
    """SQLite gives a new row the largest item id again once that row is removed: the
    graph must count it live again, or its saved file no longer matches the rows."""
    store, spec, vectors = make_store(tmp_path / "i.db")
    store.refresh_ann(spec, save=True)
    newest = store.item_id(spec, 400)
    with store.conn:
        store.delete(spec, [400])
    store.refresh_ann(spec)
    with store.conn:
        store.write(spec, [ItemResult(401, "f", vectors[0])])
    assert store.item_id(spec, 401) == newest
    info = store.refresh_ann(spec, save=True)
    assert info["rows"] == 400
    ann.clear_cache()
    store = Store(connect(str(tmp_path / "i.db")))
    spec = store.index("photos", "cnn")
    assert ann.graph_for_query(store.conn, spec) is not None  # the file matches the rows
    assert {pk for pk, _, _ in same_as_exact(store, spec, vectors[0], 2)} == {1, 401}


def test_file_ahead_of_database_is_ignored(tmp_path):
    """A database restored from a backup older than the graph file."""
    import shutil

    store, spec, vectors = make_store(tmp_path / "i.db")
    store.conn.execute("pragma wal_checkpoint(truncate)")
    shutil.copy(tmp_path / "i.db", tmp_path / "backup.db")
    with store.conn:
        store.write(spec, [ItemResult(4000 + i, "f", v) for i, v in enumerate(clustered(10, 3))])
    store.refresh_ann(spec, save=True)
    store.conn.close()
    ann.clear_cache()
    (tmp_path / "i.db-wal").unlink(missing_ok=True)
    shutil.copy(tmp_path / "backup.db", tmp_path / "i.db")
    store = Store(connect(str(tmp_path / "i.db")))
    spec = store.index("photos", "cnn")
    assert ann.graph_for_query(store.conn, spec) is None
    assert store.refresh_ann(spec)["built"]
    assert same_as_exact(store, spec, vectors[10])[0][0] == 11


def test_deletions_and_rebuild(tmp_path):
    store, spec, vectors = make_store(tmp_path / "i.db")
    store.refresh_ann(spec, save=True)
    with store.conn:
        store.delete(spec, range(1, 151))
    info = store.refresh_ann(spec, save=True)
    assert info["built"]  # over a quarter deleted: rebuilt
    for q in (0, 200, 399):
        found = same_as_exact(store, spec, vectors[q])
        assert all(pk > 150 for pk, _, _ in found)


def test_filtered_search_returns_k_allowed(tmp_path):
    store, spec, vectors = make_store(tmp_path / "i.db", n=2000)
    store.refresh_ann(spec, save=True)
    rng = np.random.default_rng(1)
    for size in (5, 40, 300, 1500):
        pks = rng.choice(2000, size, replace=False) + 1
        allowed = store.item_ids_for(spec, [str(p) for p in pks])
        assert len(allowed) == size
        q = vectors[int(rng.integers(2000))]
        found = store.knn(spec, q, 10, allowed_item_ids=allowed)
        d = 1 - vectors[pks - 1] @ q
        expected = (pks[np.argsort(d, kind="stable")][:10]).tolist()
        assert len(found) == min(10, size)
        assert {pk for pk, _, _ in found} <= set(pks.tolist())
        assert [pk for pk, _, _ in found][:3] == expected[:3]


def test_neighbours_match_exact(tmp_path):
    store, spec, vectors = make_store(tmp_path / "i.db", n=600)
    exact_pks, exact_pos, exact_d = store.neighbours(spec, 5, exact=True)
    store.refresh_ann(spec, save=True)
    pks, pos, dist = store.neighbours(spec, 5)
    assert pks == exact_pks == list(range(1, 601))
    agree = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(pos, exact_pos)])
    assert agree >= 0.99
    np.testing.assert_allclose(dist[:, 0], exact_d[:, 0], atol=1e-5)
    d = 1 - vectors @ vectors[0]
    d[0] = np.inf
    assert exact_pos[0].tolist() == np.argsort(d, kind="stable")[:5].tolist()


def test_memory_database_has_no_graph():
    store = Store(connect(MEMORY))
    spec, _ = store.create_index("photos", "path", "id", None, "cnn", "cosine", DIMS, "float")
    with store.conn:
        store.write(spec, [ItemResult(i, "f", v) for i, v in enumerate(clustered(100), 1)])
    assert store.refresh_ann(spec) == {"graph": False}
    assert store.knn(spec, clustered(100)[3], 1)[0][0] == 4


def test_index_made_before_graphs_gets_one(tmp_path):
    store, spec, vectors = make_store(tmp_path / "i.db")
    spec.params.pop("ann")
    with store.conn:
        store.conn.execute(f"drop table {spec.vec_table}_ann_log")
        store.set_params(spec, spec.params)
    spec = store.index("photos", "cnn")
    assert "ann" not in spec.params and ann.graph_for_query(store.conn, spec) is None
    assert store.refresh_ann(spec, save=True)["built"]
    spec = store.index("photos", "cnn")
    assert ann.graph_for_query(store.conn, spec) is not None
    same_as_exact(store, spec, vectors[9])


def searched_rows(view) -> set:
    """The item ids a query through view covers: the graph's live rows, less those the
    delta says were removed, plus the delta's rows."""
    graph = view.graph if isinstance(view, ann.GraphView) else view
    with graph.lock:
        live = set()
        for label in graph.index.get_ids_list():
            try:
                graph.index.get_items([label])  # refused for a label marked deleted
                live.add(int(label))
            except RuntimeError:
                pass
    if isinstance(view, ann.GraphView):
        return (live - view.delta.gone) | set(view.delta.ids.tolist())
    return live


def found_searching_wider(view, item_id, query, ef=1000) -> bool:
    if isinstance(view, ann.GraphView) and item_id in set(view.delta.ids.tolist()):
        return True  # the delta is searched exactly: found
    graph = view.graph if isinstance(view, ann.GraphView) else view
    with graph.lock:
        graph.index.set_ef(ef)
        labels, _ = graph.index.knn_query(query.reshape(1, -1), k=min(20, graph.live))
        graph.index.set_ef(graph.ef)
    return item_id in labels[0].tolist()


WRITER = textwrap.dedent("""
    import sys, numpy as np
    sys.path.insert(0, {root!r})
    from datasette_imgsim.store import ItemResult, Store, ann, connect
    ann.MIN_ROWS = 50
    ann.SAVE_AFTER = 0  # save after every batch: the file is written as often as can be
    ann.BACKGROUND_SAVE_EVERY, ann.BACKGROUND_SAVE_FRACTION = 0, 0
    background = {background}
    store = Store(connect({db!r}))
    spec = store.index("photos", "cnn")
    rng = np.random.default_rng({seed})
    pk = 10_000
    print("ready", flush=True)
    while True:
        # Clustered, as photos are (bursts of near-identical shots).
        centres = rng.random((20, {dims}), dtype=np.float32)
        x = np.repeat(centres, 10, axis=0) + 0.05 * rng.random((200, {dims}), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        with store.conn:
            store.write(spec, [ItemResult(pk + i, "f", v) for i, v in enumerate(x)])
            store.delete(spec, rng.choice(pk, 20).tolist())
        pk += 200
        store.refresh_ann(spec, background=background)
""")


@pytest.mark.parametrize("seed,background", [(seed, False) for seed in range(6)]
                         + [(seed, True) for seed in range(6)])
def test_kill_9_anywhere_leaves_correct_answers(tmp_path, seed, background):
    store, spec, vectors = make_store(tmp_path / "i.db")
    store.refresh_ann(spec, save=True)
    store.conn.close()
    root = str(Path(__file__).resolve().parent.parent)
    script = WRITER.format(root=root, db=str(tmp_path / "i.db"), seed=seed, dims=DIMS,
                           background=background)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"ready"
    time.sleep(0.4 + 0.37 * seed)  # somewhere in a batch, a refresh or a save
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    ann.clear_cache()
    for reader_kind in ("reader", "writer"):
        store = Store(connect(str(tmp_path / "i.db"), readonly=reader_kind == "reader"))
        spec = store.index("photos", "cnn")
        if reader_kind == "writer":
            store.refresh_ann(spec, save=True)
            assert ann.graph_for_query(store.conn, spec) is not None
        # What a query searches holds every committed row and no removed one (a graph
        # behind the database would miss the newest), whatever the kill interrupted.
        view = ann.graph_for_query(store.conn, spec)
        if view is not None:
            assert searched_rows(view) == set(store.backend.vectors(spec)[0].tolist())
        # Each sampled row, the newest above all, is found, no removed row comes back,
        # distances are exact. The graph's search is approximate: on these tight,
        # equidistant clusters a whole cluster can be out of reach of the tuned ef
        # (a fresh build of the same rows misses it too); such a row must then be in
        # what was searched (above) and found by a wider search of the same graph.
        newest = [pk for (pk,) in store.conn.execute(
            "select pk from _imgsim_items order by item_id desc limit 20")]
        sample = newest + [pk for (pk,) in store.conn.execute(
            "select pk from _imgsim_items order by random() limit 20")]
        stored = {pk for (pk,) in store.conn.execute("select pk from _imgsim_items")}
        overlap, missed = [], 0
        for pk in sample:
            q = store.vector(spec, store.item_id(spec, pk))
            fast = store.knn(spec, q, 10)
            exact = store.knn(spec, q, 10, exact=True)
            assert {p for p, _, _ in fast} <= stored
            if fast[0][:2] != (pk, pytest.approx(0.0, abs=1e-5)):
                assert view is not None and found_searching_wider(view, store.item_id(spec, pk), q)
                missed += 1
                continue
            exact_d = dict((i, d) for _, d, i in exact)
            for _, d, i in fast:
                if i in exact_d:
                    assert d == pytest.approx(exact_d[i], abs=1e-6)
            overlap.append(len({i for *_, i in fast} & set(exact_d)) / 10)
        assert missed <= len(sample) // 4 and np.mean(overlap) >= 0.9
        store.conn.close()
        ann.clear_cache()
    leftovers = [p.name for p in (tmp_path / "i.db.ann").iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) <= 1  # at most the one being written when killed


def test_builds_and_batch_searches_run_on_every_core(tmp_path, monkeypatch):
    # hnswlib reads num_threads=-1 as the index's own default, which a Graph sets to 1
    # for single queries: the graph must be told the number of cores itself.
    import hnswlib

    from datasette_imgsim.store import ann_graph

    asked = []

    class Recording(hnswlib.Index):
        def add_items(self, *args, num_threads=-1, **kwargs):
            asked.append(("add", num_threads))
            return super().add_items(*args, num_threads=num_threads, **kwargs)

        def knn_query(self, *args, num_threads=-1, **kwargs):
            if len(np.atleast_2d(args[0])) > 1:
                asked.append(("batch search", num_threads))
            return super().knn_query(*args, num_threads=num_threads, **kwargs)

    monkeypatch.setattr(ann_graph.hnswlib, "Index", Recording)
    def three_cores(threads=-1):
        return 3 if threads <= 0 else threads

    monkeypatch.setattr(ann_graph, "cores", three_cores)
    store, spec, _ = make_store(tmp_path / "i.db")
    store.refresh_ann(spec, save=True)
    # A small build stays on one thread: parallel insertion gives a different graph
    # each time.
    assert asked == [("add", 1)]
    monkeypatch.setattr(ann_graph, "PARALLEL_ADD", 100)
    store.refresh_ann(spec, rebuild=True)
    store.neighbours(store.index("photos", "cnn"), 5)
    assert ("add", 3) in asked and ("batch search", 3) in asked
    assert all(threads > 0 for _, threads in asked)
