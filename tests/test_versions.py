"""versions: RAW+JPEG pairs of one shot and the app's declared versions."""
from __future__ import annotations

import sqlite3

from datasette_imgsim.store import IndexSpec
from datasette_imgsim.versions import app_pairs, raw_pairs


def test_raw_beside_the_developed_file_of_one_shot():
    found = raw_pairs({1: "2024/IMG_0042.CR2", 2: "2024/IMG_0042.JPG", 3: "2024/IMG_0043.jpg",
                       4: "other/IMG_0042.jpg", 5: "2024/img_0042.heic", 6: "2024/IMG_0042.xmp"})
    assert found == {frozenset((1, 2)): "RAW+JPG pair of one shot",
                     frozenset((1, 5)): "RAW+HEIC pair of one shot"}
    assert raw_pairs({1: "a.jpg", 2: "a.png"}) == {}  # no RAW: not a camera pair


def spec_with(versions_sql):
    return IndexSpec(1, "images", "path", "id", None, "cnn", "cosine", 1280, "float",
                     "_imgsim_images_cnn", {"source": {"sql": "select 1", "app": "digikam",
                                                       "versions_sql": versions_sql}})


def test_declared_versions_of_indexed_rows():
    conn = sqlite3.connect(":memory:")
    conn.execute("create table rel (subject, object)")
    conn.executemany("insert into rel values (?, ?)", [(2, 1), (3, 1), (9, 1)])
    spec = spec_with("select subject as key, object as version_of from rel")
    assert app_pairs(conn, spec, {1, 2, 3}) == {
        frozenset((1, 2)): "versions of one photo in digikam",
        frozenset((1, 3)): "versions of one photo in digikam"}  # 9 is not indexed
    assert app_pairs(conn, spec_with("select nonsense"), {1, 2}) == {}
    assert app_pairs(conn, spec_with(None), {1, 2}) == {}
