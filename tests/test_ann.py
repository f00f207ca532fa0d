"""The HNSW graph beside an index (store/ann.py): derived from the vec0 rows, never
answering for a state it does not reflect, and surviving kill -9 anywhere."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
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
    graph = ann.graph_for_query(reader.conn, rspec)
    assert graph is not None and graph.generation == 422  # loaded at 400, applied 22 changes
    assert same_as_exact(reader, rspec, new[3])[0][0] == 1003
    assert 1 not in [pk for pk, _, _ in reader.knn(rspec, vectors[0], 10)]


def test_too_stale_falls_back_until_refreshed(tmp_path, monkeypatch):
    store, spec, vectors = make_store(tmp_path / "i.db")
    store.refresh_ann(spec, save=True)
    monkeypatch.setattr(ann, "QUERY_CATCHUP", 5)
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


WRITER = textwrap.dedent("""
    import sys, numpy as np
    sys.path.insert(0, {root!r})
    from datasette_imgsim.store import ItemResult, Store, ann, connect
    ann.MIN_ROWS = 50
    ann.SAVE_EVERY = 0  # save after every batch: the file is written as often as can be
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
        store.refresh_ann(spec)
""")


@pytest.mark.parametrize("seed", range(6))
def test_kill_9_anywhere_leaves_correct_answers(tmp_path, seed):
    store, spec, vectors = make_store(tmp_path / "i.db")
    store.refresh_ann(spec, save=True)
    store.conn.close()
    root = str(Path(__file__).resolve().parent.parent)
    script = WRITER.format(root=root, db=str(tmp_path / "i.db"), seed=seed, dims=DIMS)
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
        # Every committed row, the newest above all, is found (a graph behind the
        # database would miss them), no removed row comes back, distances are exact.
        newest = [pk for (pk,) in store.conn.execute(
            "select pk from _imgsim_items order by item_id desc limit 20")]
        sample = newest + [pk for (pk,) in store.conn.execute(
            "select pk from _imgsim_items order by random() limit 20")]
        stored = {pk for (pk,) in store.conn.execute("select pk from _imgsim_items")}
        overlap = []
        for pk in sample:
            q = store.vector(spec, store.item_id(spec, pk))
            fast = store.knn(spec, q, 10)
            exact = store.knn(spec, q, 10, exact=True)
            assert fast[0][:2] == (pk, pytest.approx(0.0, abs=1e-5))
            assert {p for p, _, _ in fast} <= stored
            exact_d = dict((i, d) for _, d, i in exact)
            for _, d, i in fast:
                if i in exact_d:
                    assert d == pytest.approx(exact_d[i], abs=1e-6)
            overlap.append(len({i for *_, i in fast} & set(exact_d)) / 10)
        assert np.mean(overlap) >= 0.9
        store.conn.close()
        ann.clear_cache()
    leftovers = [p.name for p in (tmp_path / "i.db.ann").iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) <= 1  # at most the one being written when killed
