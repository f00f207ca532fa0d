"""store/ann_links.py: a saved HNSW graph's base layer read in place, and the pairs
within a bound that its links give (Store.linked_pairs), against exact answers."""
from __future__ import annotations

import numpy as np
import pytest

from datasette_imgsim.neighbours import connected_groups
from datasette_imgsim.store import ItemResult, Store, ann, ann_links, connect

DIMS = 64


@pytest.fixture(autouse=True)
def small_graphs(monkeypatch):
    monkeypatch.setattr(ann, "MIN_ROWS", 50)
    yield
    ann.clear_cache()


def bursts(n, seed=0, spread=0.02):
    """Unit vectors in bursts of 10 near-identical ones, the bursts far apart."""
    rng = np.random.default_rng(seed)
    centres = rng.random((n // 10 + 1, DIMS)).astype(np.float32)
    x = np.repeat(centres, 10, axis=0)[:n] + spread * rng.random((n, DIMS)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def indexed(path, vectors):
    store = Store(connect(str(path)))
    spec, _ = store.create_index("photos", "path", "id", None, "cnn", "cosine", DIMS, "float")
    with store.conn:
        store.write(spec, [ItemResult(i + 1, "f", v) for i, v in enumerate(vectors)])
    store.refresh_ann(spec, save=True)
    return store, store.index("photos", "cnn")


def saved_file(store, spec):
    db_file = ann.database_file(store.conn, spec.vec_table)
    return ann.saved_files(ann.folder(db_file), spec)[0][2]


def exact_groups(pks, vectors, bound):
    d = 1 - vectors @ vectors.T
    a, b = np.nonzero(np.triu(d <= bound + 1e-6, 1))
    return {frozenset(pks[i] for i in g) for g in connected_groups(len(pks), np.stack([a, b], 1))}


def linked_groups(store, spec, bound):
    pks, pairs, dist = store.linked_pairs(spec, bound, 20)
    return pks, pairs, dist, {frozenset(pks[i] for i in g)
                              for g in connected_groups(len(pks), pairs)}


def test_the_base_layer_reads_as_the_graph_holds_it(tmp_path):
    vectors = bursts(500)
    store, spec = indexed(tmp_path / "i.db", vectors)
    layer = ann_links.read(saved_file(store, spec), DIMS)
    assert layer is not None and layer.size == 500
    assert sorted(layer.labels.tolist()) == list(range(1, 501))
    order = np.argsort(layer.labels)
    np.testing.assert_allclose(layer.vectors[order], vectors, atol=1e-6)  # unit length: as stored
    assert not layer.deleted.any()
    used = layer.links[layer.links >= 0]
    assert len(used) and used.max() < 500
    # Every row links into its own burst: its nearest row is always kept.
    burst = (layer.labels - 1) // 10
    linked = np.where(layer.links >= 0, burst[np.maximum(layer.links, 0)], -1)
    assert (linked == burst[:, None]).any(axis=1).all()


def test_another_layout_or_a_damaged_file_reads_as_none(tmp_path):
    store, spec = indexed(tmp_path / "i.db", bursts(300))
    path = saved_file(store, spec)
    assert ann_links.read(path, DIMS + 8) is None  # vectors of another width
    data = path.read_bytes()
    short = tmp_path / "short.hnsw"
    short.write_bytes(data[: len(data) // 2])
    assert ann_links.read(short, DIMS) is None
    (tmp_path / "empty.hnsw").write_bytes(b"")
    assert ann_links.read(tmp_path / "empty.hnsw", DIMS) is None


def test_short_links_take_each_link_once_one_way_links_too():
    vectors = np.eye(4, DIMS, dtype=np.float32)
    vectors[1] = vectors[0]
    vectors[2] = vectors[0]
    vectors[3] = vectors[0]
    layer = ann_links.BaseLayer(
        labels=np.array([10, 11, 12, 13]), deleted=np.array([False, False, False, True]),
        # 0 <-> 1 both ways; 2 -> 0 one way only; 1 -> 3, a deleted entry.
        links=np.array([[1, -1], [0, 3], [0, -1], [1, -1]]), vectors=vectors)
    a, b, d = (np.concatenate(p) for p in zip(*ann_links.short_links(
        layer, "cosine", 0.01, skip=np.array([], dtype=np.int64))))
    assert sorted(zip(a.tolist(), b.tolist())) == [(10, 11), (12, 10)]
    np.testing.assert_allclose(d, 0, atol=1e-6)
    a, b, _ = (np.concatenate(p) for p in zip(*ann_links.short_links(
        layer, "cosine", 0.01, skip=np.array([11]))))
    assert sorted(zip(a.tolist(), b.tolist())) == [(12, 10)]


def test_rows_with_few_short_links_are_to_be_searched():
    layer = ann_links.BaseLayer(
        labels=np.array([10, 11, 12, 13, 14, 15]),
        deleted=np.array([False, False, False, False, True, False]),
        links=np.full((6, 2), -1), vectors=np.zeros((6, DIMS), np.float32))
    # 10-11, 10-12, 11-12: two links each; 13 has one; 14 is deleted; 15 changed.
    a, b = np.array([10, 10, 11, 13]), np.array([11, 12, 12, 10])
    weak = ann_links._weakly_linked(layer, a, b, changed=np.array([15]))
    assert layer.labels[weak].tolist() == [13]


@pytest.mark.parametrize("bound", [0.005, 0.02, 0.3])
def test_links_within_a_bound_join_the_groups_all_pairs_join(tmp_path, bound):
    vectors = bursts(2000, spread=0.05)
    store, spec = indexed(tmp_path / "i.db", vectors)
    pks, pairs, dist, groups = linked_groups(store, spec, bound)
    assert groups == exact_groups(list(range(1, 2001)), vectors, bound)
    a, b = np.array(pks)[pairs[:, 0]] - 1, np.array(pks)[pairs[:, 1]] - 1
    np.testing.assert_allclose(dist, 1 - (vectors[a] * vectors[b]).sum(1), atol=1e-5)
    assert (dist <= bound + 1e-6).all()
    # Far fewer pairs than all within the bound: that is the saving.
    within = int(np.triu(1 - vectors @ vectors.T <= bound + 1e-6, 1).sum())
    assert len(pairs) <= within


def test_rows_changed_since_the_file_was_saved_are_searched(tmp_path):
    vectors = bursts(1000)
    store, spec = indexed(tmp_path / "i.db", vectors)
    rng = np.random.default_rng(5)
    # After the save: a near-copy of row 1 and a new burst of 3, row 20 moved next to
    # row 500 (a re-indexed file), and row 40 removed.
    copy = vectors[0] + 0.001 * rng.random(DIMS).astype(np.float32)
    fresh = rng.random(DIMS).astype(np.float32)
    new = [copy, fresh, fresh + 0.001, fresh + 0.002]
    new = [v / np.linalg.norm(v) for v in new]
    with store.conn:
        store.write(spec, [ItemResult(1001 + i, "f", v) for i, v in enumerate(new)])
        store.write(spec, [ItemResult(20, "f", vectors[499])])
        store.delete(spec, [40])
    assert ann_links.saved_pairs(store.conn, spec, 0.02).changed_ids.tolist()  # to search
    current = np.concatenate([vectors, np.stack(new)])
    current[19] = vectors[499]
    pks = [pk for pk in range(1, 1005) if pk != 40]
    keep = np.array([pk - 1 for pk in pks])
    _, _, _, groups = linked_groups(store, spec, 0.02)
    assert groups == exact_groups(pks, current[keep], 0.02)
    assert {1, 1001} <= next(g for g in groups if 1 in g)
    assert {1002, 1003, 1004} in groups
    assert 20 in next(g for g in groups if 500 in g)
    assert all(40 not in g for g in groups)


def test_entries_deleted_in_the_saved_graph_are_left_out(tmp_path):
    vectors = bursts(600)
    store, spec = indexed(tmp_path / "i.db", vectors)
    with store.conn:
        store.delete(spec, list(range(1, 11)))  # the whole first burst
    store.refresh_ann(spec, save=True)
    layer = ann_links.read(saved_file(store, spec), DIMS)
    assert sorted(layer.labels[layer.deleted].tolist()) == list(range(1, 11))
    pks, pairs, _, groups = linked_groups(store, spec, 0.02)
    assert not {1, 2, 3} & set(pks)
    assert groups == exact_groups(list(range(11, 601)), vectors[10:], 0.02)


def test_without_a_saved_graph_there_are_no_linked_pairs(tmp_path):
    store, spec = indexed(tmp_path / "i.db", bursts(300))
    saved_file(store, spec).unlink()
    assert store.linked_pairs(spec, 0.02, 20) is None
