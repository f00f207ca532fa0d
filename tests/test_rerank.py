import json

import numpy as np
import pytest
from click.testing import CliRunner
from datasette.cli import cli

from datasette_imgsim import rerank
from datasette_imgsim.search import SearchError, similar_to_image, similar_to_row
from datasette_imgsim.sql import register_functions
from datasette_imgsim.store import Store, connect

from .helpers import index_photos, jpeg_bytes, row_ids


def hard_crop(pixels):
    """A quarter of the area, off-centre: what global features struggle with."""
    h, w = pixels.shape[:2]
    return np.ascontiguousarray(pixels[h // 8: h // 8 + h // 2, w // 3: w // 3 + w // 2])


@pytest.fixture
def store(path_db):
    index_photos(path_db, "phash")
    return Store(connect(str(path_db)))


def test_inliers_separate_copies_from_other_pictures(photos):
    astronaut = rerank.query_features(jpeg_bytes(photos["astronaut"]))
    crop = rerank.local_features(hard_crop(photos["astronaut"]))
    flipped = rerank.local_features(np.ascontiguousarray(photos["astronaut"][:, ::-1]))
    other = rerank.local_features(photos["coffee"])
    assert rerank.inliers(astronaut, crop) >= 3 * rerank.MIN_INLIERS
    assert rerank.inliers(astronaut, flipped) >= 3 * rerank.MIN_INLIERS  # the mirrored query
    assert rerank.inliers(astronaut, other) < rerank.MIN_INLIERS


def test_flipped_features_match_a_mirror_like_features_detected_on_it(photos):
    import cv2

    astronaut = rerank.local_features(photos["astronaut"])
    mirror = cv2.resize(np.ascontiguousarray(photos["astronaut"][:, ::-1]), (300, 300),
                        interpolation=cv2.INTER_AREA)
    target = rerank.local_features(mirror)
    detected = rerank.local_features(np.ascontiguousarray(photos["astronaut"][:, ::-1]))
    flipped = astronaut.flipped()
    assert flipped.points.shape == astronaut.points.shape and flipped.width == astronaut.width
    found, expected = rerank._inliers(flipped, target), rerank._inliers(detected, target)
    assert found >= 0.9 * expected and found > 100
    assert rerank._inliers(astronaut, target) < 0.2 * found  # unflipped, the mirror is lost
    # Flipping twice gives the features back.
    twice = flipped.flipped()
    assert np.allclose(twice.points, astronaut.points)
    assert np.array_equal(twice.descriptors, astronaut.descriptors)


def test_reorder_puts_geometric_matches_first():
    results = [{"pk": p, "distance": d} for p, d in [(1, 0.1), (2, 0.2), (3, 0.3), (4, 0.4)]]
    reordered = rerank.reorder(results, {1: 0, 2: 15, 3: 90}, candidates=3)
    assert [r["pk"] for r in reordered] == [3, 2, 1, 4]
    assert [r.get("inliers") for r in reordered] == [90, 15, 0, None]
    assert "inliers" not in results[0]  # the input is left as it was


def test_similar_to_image_rerank_finds_a_hard_crop(store, path_db, photos):
    (coffee,) = row_ids(path_db, "select id from photos where title = 'coffee'")
    data = jpeg_bytes(hard_crop(photos["coffee"]))
    _, results = similar_to_image(store, "photos", data, 3, "phash", rerank="geometric")
    assert results[0]["pk"] == coffee and results[0]["inliers"] >= rerank.MIN_INLIERS
    assert len(results) == 3 and all("inliers" in r for r in results)
    _, plain = similar_to_image(store, "photos", data, 3, "phash")
    assert all("inliers" not in r for r in plain)


def test_similar_to_row_rerank_puts_the_crop_first(store, path_db):
    (chelsea,) = row_ids(path_db, "select id from photos where title = 'chelsea'")
    (crop,) = row_ids(path_db, "select id from photos where title = 'chelsea_crop'")
    _, results = similar_to_row(store, "photos", chelsea, 5, "phash", rerank="geometric")
    assert results[0]["pk"] == crop and chelsea not in [r["pk"] for r in results]


def test_rerank_reads_blobs(blob_db, photos):
    index_photos(blob_db, "phash", column="image")
    store = Store(connect(str(blob_db)))
    _, results = similar_to_image(store, "photos", jpeg_bytes(hard_crop(photos["astronaut"])), 2,
                                  "phash", rerank="geometric")
    assert results[0]["pk"] == "astronaut"


def test_bad_rerank_value(store):
    with pytest.raises(SearchError, match="rerank must be one of: geometric"):
        similar_to_row(store, "photos", 1, 5, "phash", rerank="magic")


def test_sql_fifth_argument(store, path_db):
    conn = connect(str(path_db))
    register_functions(conn)
    (chelsea,) = row_ids(path_db, "select id from photos where title = 'chelsea'")
    (crop,) = row_ids(path_db, "select id from photos where title = 'chelsea_crop'")
    (value,) = conn.execute("select similar_images('photos', ?, 3, 'phash', 'geometric')",
                            (chelsea,)).fetchone()
    results = json.loads(value)
    assert results[0]["pk"] == crop and "inliers" in results[0]
    with pytest.raises(Exception, match="user-defined function raised exception"):
        conn.execute("select similar_images('photos', ?, 3, 'phash', 'nope')", (chelsea,)).fetchone()


def test_cli_search_rerank(store, path_db, photo_dir, tmp_path, photos):
    query = tmp_path / "query.jpg"
    query.write_bytes(jpeg_bytes(hard_crop(photos["coffee"])))
    result = CliRunner().invoke(cli, ["imgsim", "search", str(path_db), str(query), "--table",
                                      "photos", "--method", "phash", "-k", "2", "--rerank",
                                      "geometric", "--json"])
    assert result.exit_code == 0, result.output
    top = json.loads(result.output)["results"][0]
    assert top["image"] == "img/coffee.jpg" and top["inliers"] >= rerank.MIN_INLIERS
