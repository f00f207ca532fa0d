import base64

import numpy as np
import pytest

from datasette.utils.sqlite import sqlite3

from datasette_imgsim.errors import InvalidName

from datasette_imgsim.store import (
    ItemResult, NotFound, Store, choose_centring, connect, map_indexes, projection, quote_identifier, sign_bits,
)


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
    with pytest.raises(InvalidName):
        quote_identifier("")


def clustered(n=3000, dims=256, clusters=40, seed=0):
    """Non-negative, unit-length vectors like CNN embeddings after ReLU6, clustered at
    two scales as photo libraries are: subjects, and bursts of 10 shots of each."""
    rng = np.random.default_rng(seed)
    centres = np.abs(rng.normal(size=(clusters, dims)))
    bursts = np.clip(centres[rng.integers(0, clusters, n // 10 + 1)]
                     + rng.normal(scale=0.5, size=(n // 10 + 1, dims)), 0, None)
    vectors = np.clip(np.repeat(bursts, 10, axis=0)[:n] + rng.normal(scale=0.25, size=(n, dims)), 0, None)
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def write_in_batches(store, spec, vectors, batch=256, start=0):
    for i in range(0, len(vectors), batch):
        with store.conn:
            store.write(spec, [ItemResult(start + j + 1, "f", v) for j, v in enumerate(vectors[i:i + batch], i)])


def count(store, table):
    return store.conn.execute(f"select count(*) from {quote_identifier(table)}").fetchone()[0]


@pytest.mark.parametrize("metric", ["cosine", "l2", "l1"])
def test_prefiltered_knn_returns_the_exact_top_10(store, metric):
    vectors = clustered()
    spec, _ = store.create_index("t", "c", "rowid", None, "m", metric, 256, "float")
    write_in_batches(store, spec, vectors)
    spec = store.index("t", "m")
    assert spec.quantized["mean"] is not None
    for q in range(0, 3000, 60):
        query = vectors[q].tobytes()
        fast = store.knn(spec, query, 10)
        exact = store.knn(spec, query, 10, exact=True)
        assert [pk for pk, _, _ in fast] == [pk for pk, _, _ in exact]
        assert [d for _, d, _ in fast] == pytest.approx([d for _, d, _ in exact], abs=1e-6)


def test_mean_is_stored_with_the_index_and_refitted_while_small(store):
    from datasette_imgsim.store import MEAN_SAMPLE_ROWS
    from datasette_imgsim.store.quantize import decode_mean as _decode_mean

    vectors = clustered(n=1100)
    spec, _ = store.create_index("t", "c", "rowid", None, "m", "cosine", 256, "float")
    assert spec.quantized == {"table": "_imgsim_t_m_bits", "bits": 256, "seed": 0, "partitions": 16,
                              "mean": None, "mean_rows": 0}
    write_in_batches(store, spec, vectors[:200])
    stored = store.index("t", "m").quantized
    assert stored["mean_rows"] == 200
    assert _decode_mean(stored["mean"]) == pytest.approx(vectors[:200].mean(axis=0), abs=1e-6)
    write_in_batches(store, spec, vectors[200:], start=200)  # grew 4x: refitted on all rows
    stored = store.index("t", "m").quantized
    assert 800 <= stored["mean_rows"] < MEAN_SAMPLE_ROWS
    assert _decode_mean(stored["mean"]) == pytest.approx(vectors[:stored["mean_rows"]].mean(axis=0), abs=1e-6)
    assert count(store, "_imgsim_t_m_bits") == count(store, spec.vec_table) == 1100


def test_bit_table_follows_writes_deletes_and_rebuilds(store):
    vectors = clustered(n=300)
    spec, _ = store.create_index("t", "c", "rowid", None, "m", "cosine", 256, "float")
    bits = spec.quantized["table"]
    write_in_batches(store, spec, vectors)
    assert count(store, bits) == count(store, spec.vec_table) == 300
    with store.conn:
        store.write(spec, [ItemResult(1, "changed", vectors[5]), ItemResult(2, "bad", error="broken")])
        store.delete(spec, [3, 4])
    assert count(store, bits) == count(store, spec.vec_table) == 297
    assert store.knn(spec, vectors[5].tobytes(), 2)[0][0] in (1, 6)
    rebuilt, note = store.create_index("t", "c", "rowid", None, "m", "l2", 256, "float")
    assert "metric" in note and rebuilt.quantized["mean"] is None
    assert count(store, rebuilt.quantized["table"]) == 0
    assert store.conn.execute("select count(*) from sqlite_master where name like '%bits%' "
                              "and type = 'table' and name not like '%\\_bits\\_%' escape '\\'").fetchone()[0] == 1


def test_indexes_without_a_bit_table_use_the_exact_scan(store):
    vectors = clustered(n=300)
    spec, _ = store.create_index("t", "c", "rowid", None, "m", "cosine", 256, "float")
    write_in_batches(store, spec, vectors)
    expected = store.knn(spec, vectors[7].tobytes(), 5, exact=True)
    # As an index built before the pre-filter existed: no "quantized" in its params.
    store.conn.execute(f"drop table {spec.quantized['table']}")
    store.set_params(spec, {})
    old = store.index("t", "m")
    assert old.quantized is None and store.knn(old, vectors[7].tobytes(), 5) == expected
    with store.conn:
        store.write(old, [ItemResult(999, "x", vectors[8])])
        store.delete(old, [1])
    small, _ = store.create_index("t", "c", "rowid", None, "tiny", "l2", 3, "float")
    assert small.quantized is None


def test_bit_table_without_partitions_still_works(store):
    # As made by the first version of the pre-filter: one bit table, no partition key.
    vectors = clustered(n=600)
    spec, _ = store.create_index("t", "c", "rowid", None, "m", "cosine", 256, "float")
    table = spec.quantized["table"]
    store.conn.execute(f"drop table {table}")
    store.conn.execute(f"create virtual table {table} using vec0(embedding bit[256])")
    store.set_params(spec, {"quantized": {**spec.quantized, "partitions": 1}})
    write_in_batches(store, spec, vectors)
    spec = store.index("t", "m")
    assert count(store, table) == 600
    for q in (0, 123, 456):
        assert store.knn(spec, vectors[q].tobytes(), 10) == store.knn(spec, vectors[q].tobytes(), 10, exact=True)


def test_map_indexes_maps_just_the_databases_holding_indexes(store, tmp_path):
    store.create_index("t", "c", "rowid", None, "m", "cosine", 8, "float")
    conn = sqlite3.connect(tmp_path / "main.db")
    conn.execute("attach database ? as idx", (str(tmp_path / "s.db"),))
    conn.execute("attach database ? as plain", (str(tmp_path / "plain.db"),))
    map_indexes(conn)
    sizes = {schema: conn.execute(f"pragma {schema}.mmap_size").fetchone()[0] for schema in ("main", "idx", "plain")}
    assert sizes["idx"] > 0 and sizes["main"] == sizes["plain"] == 0


def test_a_sqlite3_without_extension_loading_gets_a_clear_message(tmp_path, monkeypatch):
    """macOS system Python's sqlite3 has no enable_load_extension: say how to fix it."""
    from click.testing import CliRunner
    from datasette.cli import cli

    from datasette_imgsim.store import connection as store_module
    from datasette_imgsim.store import ExtensionUnavailable, load_sqlite_vec

    class NoExtensions:
        pass

    with pytest.raises(ExtensionUnavailable, match="pysqlite3-binary"):
        load_sqlite_vec(NoExtensions())

    def refuse(conn):
        raise ExtensionUnavailable(store_module.EXTENSION_HELP)

    monkeypatch.setattr(store_module, "load_sqlite_vec", refuse)
    (tmp_path / "p.db").write_bytes(b"")
    result = CliRunner().invoke(cli, ["imgsim", "status", str(tmp_path / "p.db")])
    assert result.exit_code == 1 and "cannot load SQLite extensions" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("dims,bits", [(1764, 1792), (100, 128)])
def test_projection_is_box_muller_over_the_pcg64_stream(dims, bits):
    """Stored bit tables were written with these hyperplanes: the stream must never change."""
    raw = np.random.PCG64(7).random_raw(dims * bits * 2)
    uniform = ((raw >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0**53
    expected = np.sqrt(-2 * np.log(uniform[0::2])) * np.cos(2 * np.pi * uniform[1::2])
    assert np.array_equal(projection(dims, bits, 7), expected.reshape(dims, bits).astype(np.float32))


def test_prefilter_finds_neighbours_of_low_contrast_rows(store):
    """Non-negative vectors without cluster structure (HOG, colour histograms of unrelated
    photos) where some rows sit near the collection's mean: those are the exact nearest
    neighbours of many rows. Bits taken around the mean itself found the nearest of 55%
    of these rows (they look far in Hamming distance); around half the mean, 80%."""
    rng = np.random.default_rng(0)
    n, dims = 3000, 256
    contrast = rng.uniform(0.1, 1.0, size=(n, 1))
    vectors = (1.0 + contrast * (np.abs(rng.normal(size=(n, dims))) - 1.0)).astype(np.float32)
    spec, _ = store.create_index("t", "c", "rowid", None, "m", "cosine", dims, "float")
    write_in_batches(store, spec, vectors, batch=500)
    spec = store.index("t", "m")
    found = [store.knn(spec, vectors[q].tobytes(), 2)[1][0]
             == store.knn(spec, vectors[q].tobytes(), 2, exact=True)[1][0] for q in range(0, n, 30)]
    assert np.mean(found) >= 0.7


def test_centring_is_chosen_by_the_collection():
    rng = np.random.default_rng(0)
    contrast = rng.uniform(0.1, 1.0, size=(2000, 1))
    flat = (1.0 + contrast * (np.abs(rng.normal(size=(2000, 256))) - 1.0)).astype(np.float32)
    for vectors, expected in ((clustered(), 1.0), (flat, 0.5)):
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        assert choose_centring(vectors, unit.mean(axis=0), projection(256, 256, 0), "cosine") == expected


def test_indexes_made_before_centring_was_stored_keep_their_bits(store):
    """Their bit tables were written around the mean itself: queries must be too."""
    vectors = clustered()
    spec, _ = store.create_index("t", "c", "rowid", None, "m", "cosine", 256, "float")
    write_in_batches(store, spec, vectors[:500])
    quantized = {k: v for k, v in store.index("t", "m").quantized.items() if k != "centring"}
    mean = np.frombuffer(base64.b64decode(quantized["mean"]), dtype="<f4")
    around_mean = np.packbits((vectors[:5] - mean) @ projection(256, quantized["bits"], 0) > 0, axis=1)
    assert np.array_equal(sign_bits(vectors[:5], quantized, "cosine"), around_mean)
    assert not np.array_equal(sign_bits(vectors[:5], {**quantized, "centring": 0.5}, "cosine"), around_mean)
