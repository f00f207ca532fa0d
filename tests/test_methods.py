"""Each built-in method: vectors stored so that sqlite-vec ranks as the method intends."""
import cv2
import numpy as np
import pytest

from datasette_imgsim.images import load_image
from datasette_imgsim.methods.histogram import colour_histogram
from datasette_imgsim.plugins import get_method
from datasette_imgsim.store import Store, connect

from .helpers import jpeg_bytes


def index_vectors(tmp_path, method, metric, images):
    """Store the method's vectors for images in a real vec0 table; return the Store and spec."""
    store = Store(connect(str(tmp_path / "m.db")))
    spec, _ = store.create_index("t", "c", "rowid", None, method.name, metric, method.dims,
                                 method.element_type)
    from datasette_imgsim.store import ItemResult

    vectors = method.vectors_for(method.extract(images).vectors, metric)
    with store.conn:
        store.write(spec, [ItemResult(i, "x", v) for i, v in enumerate(vectors)])
    return store, spec, vectors


def sqlite_vec_ranking(store, spec, query_vector, k):
    return [pk for pk, _, _ in store.knn(spec, query_vector.tobytes(), k)]


@pytest.mark.parametrize("metric, cv_method", [("cosine", cv2.HISTCMP_CORREL),
                                                ("l2", cv2.HISTCMP_HELLINGER)])
def test_histogram_ranking_equals_opencv_compareHist(tmp_path, photos, metric, cv_method):
    images = [load_image(jpeg_bytes(p), 128) for p in photos.values()]
    # Variants give close calls, not just obvious winners.
    images += [np.ascontiguousarray(images[1][::-1]), np.clip(images[2] * 0.8, 0, 255).astype(np.uint8)]
    method = get_method("histogram")
    store, spec, vectors = index_vectors(tmp_path, method, metric, images)
    hists = [colour_histogram(img).astype(np.float32) for img in images]
    for q, query in enumerate(hists):
        scores = [cv2.compareHist(query, h, cv_method) for h in hists]
        # Correlation: higher is nearer; Hellinger: lower is nearer.
        expected = sorted(range(len(hists)), key=lambda i: -scores[i] if metric == "cosine" else scores[i])
        assert sqlite_vec_ranking(store, spec, vectors[q], len(hists)) == expected


def test_phash_hamming(photos):
    method = get_method("phash")
    original = load_image(jpeg_bytes(photos["astronaut"]), method.min_size)
    recoded = load_image(jpeg_bytes(photos["astronaut"], quality=40), method.min_size)
    other = load_image(jpeg_bytes(photos["coffee"]), method.min_size)
    a, b, c = method.extract([original, recoded, other]).vectors
    assert a.dtype == np.uint8 and a.shape == (8,)

    def hamming(x, y):
        return int(np.unpackbits(x ^ y).sum())

    assert hamming(a, a) == 0
    assert hamming(a, b) <= 4
    assert hamming(a, c) >= 20


def test_hog_is_shape_not_colour(photos):
    method = get_method("hog")
    image = load_image(jpeg_bytes(photos["astronaut"]), method.min_size)
    recoloured = np.ascontiguousarray(image[..., ::-1])  # swap red and blue
    other = load_image(jpeg_bytes(photos["coins"]), method.min_size)
    vectors = method.vectors_for(method.extract([image, recoloured, other]).vectors, "cosine")
    assert vectors.shape == (3, method.dims)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    assert unit[0] @ unit[1] > 0.95
    assert unit[0] @ unit[2] < unit[0] @ unit[1]


def test_every_builtin_declares_a_consistent_shape(photos):
    image = load_image(jpeg_bytes(photos["chelsea"]), 256)
    for name in ["histogram", "hog", "phash"]:
        method = get_method(name)
        vectors = method.vectors_for(method.extract([image, image]).vectors, method.metric)
        width = method.dims if method.element_type == "float" else method.dims // 8
        assert vectors.shape == (2, width)


def test_flat_images_get_a_comparable_cosine_vector(tmp_path, photos):
    """HOG of a flat image is all zeros, which cosine cannot compare (sqlite-vec: NULL)."""
    method = get_method("hog")
    flat = np.full((200, 300, 3), 128, np.uint8)
    images = [flat, flat.copy(), load_image(jpeg_bytes(photos["coins"]), method.min_size)]
    store, spec, vectors = index_vectors(tmp_path, method, "cosine", images)
    assert np.isfinite(vectors).all() and np.linalg.norm(vectors[0]) > 0
    results = store.knn(spec, vectors[0].tobytes(), 3)
    assert [pk for pk, _, _ in results][:2] in ([0, 1], [1, 0])
    assert results[0][1] == pytest.approx(0, abs=1e-6) and results[2][1] >= 1.0
