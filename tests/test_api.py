"""The public Python API: ImageIndex and Match, as a script would use them."""
from __future__ import annotations

from pathlib import Path

import pytest

from datasette_imgsim import ImageIndex, ImgsimError, Match
from datasette_imgsim.errors import NotFound

from .helpers import jpeg_bytes

DEMO = Path(__file__).parent.parent / "demo.db"


def test_demo_similar_to_row_returns_matches():
    with ImageIndex.open(DEMO) as index:
        matches = index.similar_to_row("photos", 38, k=3)
    assert len(matches) == 3 and all(isinstance(m, Match) for m in matches)
    assert 38 not in [m.pk for m in matches]
    assert [m.distance for m in matches] == sorted(m.distance for m in matches)


def test_build_search_duplicates_status(path_db, photos):
    with ImageIndex.open(path_db, write=True) as index:
        summary = index.build("photos", "path", methods=["phash", "histogram"])
        assert summary.indexed == 9 and summary.failed == 0
    with ImageIndex.open(path_db) as index:
        status = {row["method"]: row for row in index.status()}
        assert set(status) == {"phash", "histogram"} and status["phash"]["indexed"] == 9
        # The crop of chelsea (row 3; chelsea is row 2) is its nearest neighbour by histogram.
        crop = index.similar_to_row("photos", 2, k=1, method="histogram")[0]
        assert crop.pk == 3 and crop.inliers is None and crop.to_dict() == {"pk": 3, "distance": crop.distance}
        upload = index.similar_to_image("photos", jpeg_bytes(photos["coffee"]), k=2, method="phash")
        assert upload[0].pk == 4 and upload[0].distance <= 2
        reranked = index.similar_to_row("photos", 2, k=2, method="histogram", rerank="geometric")
        assert reranked[0].pk == 3 and reranked[0].inliers >= 12
        groups = index.duplicates("photos", method="phash")
        assert groups.method == "phash" and groups.indexed == 9


def test_errors_are_imgsim_errors(path_db, tmp_path):
    with pytest.raises(NotFound, match="database file not found"):
        ImageIndex.open(tmp_path / "nope.db")
    with ImageIndex.open(path_db) as index:
        with pytest.raises(ImgsimError, match="has no image index") as raised:
            index.similar_to_row("photos", 1)
        assert raised.value.status == 404


def test_memory_database_is_not_a_file(tmp_path, monkeypatch):
    from datasette_imgsim.store import Store, connect

    monkeypatch.chdir(tmp_path)
    store = Store(connect(":memory:"))
    store.ensure_schema()
    assert store.indexes() == [] and list(tmp_path.iterdir()) == []


def test_an_index_built_with_an_older_embedding_keeps_working_and_says_so(tmp_path):
    """demo.db's cnn index predates embedding versions (version 1, the centre crop): queries
    are embedded the same way, and status suggests the rebuild that brings version 2."""
    import shutil
    import sqlite3

    from click.testing import CliRunner
    from datasette.cli import cli

    from datasette_imgsim.plugins import get_method

    demo = tmp_path / "demo.db"
    shutil.copy(DEMO, demo)
    (image,) = sqlite3.connect(demo).execute("select image from photos where id = 7").fetchone()
    with ImageIndex.open(demo) as index:
        (nearest,) = index.similar_to_image("photos", image, k=1, method="cnn")
        status = {row["method"]: row for row in index.status()}
    assert nearest.pk == 7 and nearest.distance < 1e-3  # same embedding as stored
    assert get_method("cnn").version == 2 and status["cnn"]["embedding_version"] == 1
    assert "--rebuild" in status["cnn"]["rebuild_suggested"]
    assert status["phash"]["rebuild_suggested"] is None
    result = CliRunner().invoke(cli, ["imgsim", "status", str(demo)])
    assert "photos cnn: built with cnn embedding version 1" in result.output
    result = CliRunner().invoke(cli, ["imgsim", "index", str(demo), "--table", "photos", "--column",
                                      "image", "--method", "cnn", "--rebuild", "--workers", "1"])
    assert result.exit_code == 0 and "cnn: rebuilding" in result.output, result.output
    with ImageIndex.open(demo) as index:
        (row,) = [r for r in index.status() if r["method"] == "cnn"]
        assert row["embedding_version"] == 2 and row["rebuild_suggested"] is None
        (nearest,) = index.similar_to_image("photos", image, k=1, method="cnn")
    assert nearest.pk == 7 and nearest.distance < 1e-3
