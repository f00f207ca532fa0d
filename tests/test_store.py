import numpy as np
import pytest

from datasette_imgsim.store import ItemResult, NotFound, Store, connect, quote_identifier


@pytest.fixture
def store(tmp_path):
    return Store(connect(str(tmp_path / "s.db")))


def unit(*values):
    v = np.array(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_create_write_knn_delete(store):
    spec, note = store.create_index("photos", "path", "id", "/r", "m", "cosine", 3, "float")
    assert note is None and spec.vec_table == "_imgsim_photos_m"
    with store.conn:
        store.write(spec, [ItemResult(1, "a", unit(1, 0, 0)), ItemResult(2, "b", unit(1, 0.2, 0)),
                           ItemResult(3, "c", unit(0, 0, 1)), ItemResult(4, "d", error="broken")])
    assert store.counts(spec) == {"indexed": 3, "errors": 1}
    assert [pk for pk, _, _ in store.knn(spec, unit(1, 0.05, 0).tobytes(), 3)] == [1, 2, 3]
    assert store.fingerprints(spec) == {1: "a", 2: "b", 3: "c", 4: "d"}
    with store.conn:
        store.delete(spec, [1])
    assert [pk for pk, _, _ in store.knn(spec, unit(1, 0.05, 0).tobytes(), 3)] == [2, 3]
    assert store.conn.execute(f"select count(*) from {spec.vec_table}").fetchone()[0] == 2


def test_rewrite_replaces_vector_and_labels(store):
    spec, _ = store.create_index("t", "c", "rowid", None, "m", "l2", 2, "float")
    with store.conn:
        store.write(spec, [ItemResult(1, "v1", np.float32([0, 0]), [("cat", 0.9)])])
        store.write(spec, [ItemResult(1, "v2", np.float32([5, 5]), [("dog", 0.8)])])
    assert store.conn.execute(f"select count(*) from {spec.vec_table}").fetchone()[0] == 1
    assert store.labels("t", 1) == [("dog", pytest.approx(0.8))]
    (_, distance, _), = store.knn(spec, np.float32([5, 5]).tobytes(), 5)
    assert distance == 0


def test_text_and_numeric_keys_match_url_strings(store):
    spec, _ = store.create_index("t", "c", "rowid", None, "m", "l2", 2, "float")
    with store.conn:
        store.write(spec, [ItemResult(7, "x", np.float32([0, 1])), ItemResult("abc", "y", np.float32([1, 0]))])
    assert store.item_id(spec, "7") == store.item_id(spec, 7) is not None
    assert store.item_id(spec, "abc") is not None
    assert store.item_id(spec, "8") is None


def test_bit_index_hamming(store):
    spec, _ = store.create_index("t", "c", "rowid", None, "phash", "hamming", 64, "bit")
    with store.conn:
        store.write(spec, [ItemResult(1, "x", np.zeros(8, np.uint8)),
                           ItemResult(2, "y", np.full(8, 255, np.uint8))])
    query = np.zeros(8, np.uint8)
    query[0] = 0b111
    assert store.knn(spec, query.tobytes(), 2) == [(1, 3.0, 1), (2, 61.0, 2)]


def test_changed_definition_rebuilds(store):
    spec, _ = store.create_index("t", "c", "rowid", None, "m", "l2", 2, "float")
    with store.conn:
        store.write(spec, [ItemResult(1, "x", np.float32([0, 1]))])
    same, note = store.create_index("t", "c", "rowid", None, "m", "l2", 2, "float")
    assert note is None and same.id == spec.id
    rebuilt, note = store.create_index("t", "c", "rowid", None, "m", "cosine", 2, "float")
    assert "metric" in note and store.fingerprints(rebuilt) == {}


def test_default_index_and_unknown_names(store):
    with pytest.raises(NotFound, match="has no image index"):
        store.index("photos")
    store.create_index("photos", "c", "rowid", None, "histogram", "cosine", 2, "float")
    store.create_index("photos", "c", "rowid", None, "cnn", "cosine", 2, "float")
    assert store.index("photos").method == "cnn"
    with pytest.raises(NotFound, match="no 'hog' index; it has: histogram, cnn"):
        store.index("photos", "hog")


def test_odd_table_names_get_safe_vector_tables(store):
    spec, _ = store.create_index('my "photos"; drop table x', "c", "rowid", None, "m", "l2", 2, "float")
    assert spec.vec_table == "_imgsim_my_photos_drop_table_x_m"
    assert quote_identifier('a"b') == '"a""b"'
    with pytest.raises(ValueError):
        quote_identifier("")
