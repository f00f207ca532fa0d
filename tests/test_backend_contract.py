"""The VectorBackend contract, run against every implementation: the proof that the seam
between the catalogue and the vectors is real. A new backend joins BACKENDS."""
from __future__ import annotations

import numpy as np
import pytest

from datasette_imgsim.store import IndexSpec, MemoryBackend, Store, Vec0Backend, connect
from datasette_imgsim.store.backend import distances


def vec0(conn):
    return Vec0Backend(conn)


def memory(conn):
    return MemoryBackend()


_milvus_lite = {}


def milvus(conn):
    """Milvus Lite (embedded: the same client API as a server), one file per test run."""
    from datasette_imgsim.store.milvus import MilvusBackend

    if "backend" not in _milvus_lite:
        import tempfile

        folder = tempfile.mkdtemp(prefix="imgsim-milvus-")
        _milvus_lite["backend"] = MilvusBackend(f"{folder}/contract.milvus.db")
    return _milvus_lite["backend"]


BACKENDS = [vec0, memory, milvus]


@pytest.fixture(params=BACKENDS, ids=lambda f: f.__name__)
def make_backend(request):
    return request.param


@pytest.fixture
def conn(tmp_path):
    return connect(str(tmp_path / "index.db"))


def spec(n, dims=8, element_type="float", metric="cosine", vec_table=None) -> IndexSpec:
    return IndexSpec(n, "photos", "path", "id", None, "m", metric, dims, element_type,
                     vec_table or f"_imgsim_contract_{n}")


def created(backend, conn, index: IndexSpec) -> IndexSpec:
    with conn:
        index.params.update(backend.create(index))
    return index


def rng_vectors(n, dims, seed=0):
    return np.random.default_rng(seed).standard_normal((n, dims)).astype(np.float32)


@pytest.mark.parametrize("metric", ["cosine", "l2", "l1"])
def test_knn_is_exact_and_ordered(make_backend, conn, metric):
    backend = make_backend(conn)
    index = created(backend, conn, spec(1, metric=metric))
    vectors = rng_vectors(50, 8)
    with conn:
        backend.add(index, list(range(1, 51)), vectors)
    query = rng_vectors(1, 8, seed=1)[0]
    found = backend.knn(index, query, 5)
    expected = np.argsort(distances(vectors, query, metric), kind="stable")[:5] + 1
    assert [i for i, _ in found] == expected.tolist()
    assert [d for _, d in found] == sorted(d for _, d in found)
    assert found[0][1] == pytest.approx(distances(vectors, query, metric)[expected[0] - 1], rel=1e-4)


def test_hamming_on_bit_vectors(make_backend, conn):
    backend = make_backend(conn)
    index = created(backend, conn, spec(2, dims=64, element_type="bit", metric="hamming"))
    codes = np.zeros((3, 8), np.uint8)
    codes[1, 0] = 0b111
    codes[2] = 255
    with conn:
        backend.add(index, [10, 11, 12], codes)
    assert backend.knn(index, np.zeros(8, np.uint8), 3) == [(10, 0.0), (11, 3.0), (12, 64.0)]


def test_remove_vector_vectors_count(make_backend, conn):
    backend = make_backend(conn)
    index = created(backend, conn, spec(3))
    vectors = rng_vectors(6, 8)
    with conn:
        backend.add(index, [5, 1, 3, 2, 4, 6], vectors)
    assert backend.count(index) == 6
    with conn:
        backend.remove(index, [3, 99])
    ids, matrix = backend.vectors(index)
    assert ids.tolist() == [1, 2, 4, 5, 6] and backend.count(index) == 5
    np.testing.assert_array_equal(matrix[ids.tolist().index(5)], vectors[0])
    np.testing.assert_array_equal(backend.vector(index, 1), vectors[1])
    assert backend.vector(index, 3) is None
    assert 3 not in [i for i, _ in backend.knn(index, vectors[2], 6)]


def test_large_float_index_prefilter_agrees_with_exact(make_backend, conn):
    """Above vec0's pre-filter threshold (64 dims, bit table) answers stay exact in order."""
    backend = make_backend(conn)
    index = created(backend, conn, spec(4, dims=128))
    # Clustered, as real embeddings are (bursts, series): 30 groups of 20 near-copies.
    centres = rng_vectors(30, 128, seed=2)
    vectors = (np.repeat(centres, 20, axis=0) + 0.1 * rng_vectors(600, 128, seed=3)).astype(np.float32)
    with conn:
        for start in range(0, 600, 200):
            backend.add(index, list(range(start + 1, start + 201)), vectors[start:start + 200])
    for q in (0, 123, 599):
        fast = backend.knn(index, vectors[q], 10)
        exact = backend.knn(index, vectors[q], 10, exact=True)
        assert fast[0] == (q + 1, pytest.approx(0.0, abs=1e-5))
        assert [i for i, _ in fast] == [i for i, _ in exact]
        assert [d for _, d in fast] == pytest.approx([d for _, d in exact], abs=1e-6)


def test_drop_forgets_everything(make_backend, conn):
    backend = make_backend(conn)
    index = created(backend, conn, spec(5))
    with conn:
        backend.add(index, [1, 2], rng_vectors(2, 8))
        backend.drop(index)
    index = created(backend, conn, spec(5))
    assert backend.count(index) == 0 and backend.knn(index, rng_vectors(1, 8)[0], 3) == []


def test_store_over_either_backend(make_backend, tmp_path):
    """The catalogue (keys, errors, labels) works the same whatever holds the vectors."""
    from datasette_imgsim.store import ItemResult

    conn = connect(str(tmp_path / "catalogue.db"))
    store = Store(conn, make_backend(conn))
    index, _ = store.create_index("photos", "path", "id", None, "m", "l2", 3, "float")
    with conn:
        store.write(index, [ItemResult(7, "a", np.float32([0, 0, 1]), [("cat", 0.9)]),
                            ItemResult("x", "b", np.float32([0, 1, 0])),
                            ItemResult(8, "c", error="broken")])
    assert [pk for pk, _, _ in store.knn(index, np.float32([0, 0.1, 1]), 3)] == [7, "x"]
    assert store.item_id(index, "7") == store.item_id(index, 7)
    assert store.labels("photos", "7") == [("cat", pytest.approx(0.9))]
    pks, matrix = store.load_vectors(index)
    assert pks == [7, "x"] and matrix.shape == (2, 3)
    with conn:
        store.delete(index, [7])
    assert [pk for pk, _, _ in store.knn(index, np.float32([0, 0, 1]), 3)] == ["x"]
    assert store.counts(index) == {"indexed": 1, "errors": 1}


def test_knn_allowed_keeps_k_and_only_allowed(make_backend, conn):
    """A selective filter still gets k results, all of them allowed, in exact order."""
    backend = make_backend(conn)
    index = created(backend, conn, spec(6, dims=128))
    vectors = rng_vectors(700, 128, seed=4)
    with conn:
        backend.add(index, list(range(1, 701)), vectors)
    query = rng_vectors(1, 128, seed=5)[0]
    d = distances(vectors, query, "cosine")
    for allowed in ({3, 500, 77}, set(range(1, 701, 7)), set(range(2, 700, 2))):
        found = backend.knn(index, query, 10, allowed=allowed)
        ids = np.array(sorted(allowed))
        expected = ids[np.argsort(d[ids - 1], kind="stable")][:10].tolist()
        assert [i for i, _ in found] == expected
    assert backend.knn(index, query, 5, allowed=set()) == []


def test_neighbours_batch(make_backend, conn):
    backend = make_backend(conn)
    index = created(backend, conn, spec(7, metric="l2"))
    vectors = rng_vectors(40, 8, seed=6)
    with conn:
        backend.add(index, list(range(101, 141)), vectors)
    ids, found, dist = backend.neighbours(index, 3)
    assert ids.tolist() == list(range(101, 141)) and found.shape == dist.shape == (40, 3)
    for row in (0, 17, 39):
        d = distances(vectors, vectors[row], "l2")
        d[row] = np.inf
        expected = (np.argsort(d, kind="stable")[:3] + 101).tolist()
        assert found[row].tolist() == expected
        assert dist[row].tolist() == pytest.approx(np.sort(d)[:3].tolist(), rel=1e-4)
