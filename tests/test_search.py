import pytest

from datasette_imgsim.images import ImageError
from datasette_imgsim.search import SearchError, parse_k, similar_to_image, similar_to_row
from datasette_imgsim.store import MAX_K, NotFound, Store, connect

from .helpers import index_photos, jpeg_bytes, row_ids


@pytest.fixture
def store(path_db):
    index_photos(path_db, "phash", "hog")
    return Store(connect(str(path_db)))


def test_parse_k():
    assert parse_k(None) == 10 and parse_k("3") == 3 and parse_k(10**9) == MAX_K
    for bad, message in [("ten", "whole number"), (0, "at least 1"), (-5, "at least 1"), (2.5, "whole number")]:
        with pytest.raises(SearchError, match=message):
            parse_k(bad)


def test_similar_to_row_excludes_itself_and_is_sorted(store, path_db):
    (chelsea,) = row_ids(path_db, "select id from photos where title = 'chelsea'")
    spec, results = similar_to_row(store, "photos", str(chelsea), 100, "hog")
    assert spec.method == "hog"
    assert chelsea not in [r["pk"] for r in results] and len(results) == 8
    assert [r["distance"] for r in results] == sorted(r["distance"] for r in results)


def test_similar_to_image_ranks_the_original_first(store, path_db, photos):
    (rocket,) = row_ids(path_db, "select id from photos where title = 'rocket'")
    _, results = similar_to_image(store, "photos", jpeg_bytes(photos["rocket"], quality=50), 3, "phash")
    assert results[0]["pk"] == rocket


def test_errors_say_what_is_wrong(store):
    with pytest.raises(NotFound, match="row 999999 of 'photos' is not in the 'phash' index"):
        similar_to_row(store, "photos", 999999, 5, "phash")
    with pytest.raises(NotFound, match="table 'nope' has no image index"):
        similar_to_row(store, "nope", 1)
    with pytest.raises(ImageError, match="not a recognised image"):
        similar_to_image(store, "photos", b"GIF89a-nope")


def test_similar_to_row_matches_the_exact_scan(store, path_db):
    # hog (1764 floats) is searched through its sign-bit pre-filter; the answer must
    # be the exact scan's, distances included.
    spec = store.index("photos", "hog")
    assert spec.quantized and spec.quantized["mean"] is not None
    for pk in row_ids(path_db, "select id from photos"):
        _, results = similar_to_row(store, "photos", pk, 5, "hog")
        vector = store.vector(spec, store.item_id(spec, pk))
        exact = [(p, d) for p, d, _ in store.knn(spec, vector, 6, exact=True) if p != pk][:5]
        assert [(r["pk"], r["distance"]) for r in results] == exact
