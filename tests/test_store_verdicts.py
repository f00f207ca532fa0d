"""store/verdicts.py: the verdict cache, kept only while both images are unchanged."""
from __future__ import annotations

import sqlite3

from datasette_imgsim.store import verdicts

CROP = {"is_copy": True, "kind": "crop", "reason": "crop", "which_is_source": "a",
        "grey": None, "edited": "b"}


def test_saved_verdicts_come_back_in_the_order_asked():
    conn = sqlite3.connect(":memory:")
    prints = {1: "f1", 2: "f2", "x": "fx"}
    assert verdicts.load(conn, "photos", [(1, 2)], prints, 1) == {}  # no table yet
    assert verdicts.save(conn, "photos", {(2, 1): CROP, (1, "x"): CROP}, prints, 1) == 2
    found = verdicts.load(conn, "photos", [(2, 1), (1, "x"), (2, "x")], prints, 1)
    verdict, swapped = found[(2, 1)]
    # Stored as (1, 2): asked as (2, 1) it comes back swapped, and swap() restores it.
    assert swapped and verdicts.swap(verdict)["which_is_source"] == "a"
    assert verdict["which_is_source"] == "b" and verdict["edited"] == "a"
    assert (2, "x") not in found and found[(1, "x")][1] is False


def test_a_changed_image_or_verifier_forgets_the_verdict():
    conn = sqlite3.connect(":memory:")
    verdicts.save(conn, "photos", {(1, 2): CROP}, {1: "f1", 2: "f2"}, 1)
    assert verdicts.load(conn, "photos", [(1, 2)], {1: "f1", 2: "changed"}, 1) == {}
    assert verdicts.load(conn, "photos", [(1, 2)], {1: "f1", 2: "f2"}, 2) == {}
    assert verdicts.load(conn, "other", [(1, 2)], {1: "f1", 2: "f2"}, 1) == {}
    verdicts.clear(conn, "photos")
    assert verdicts.load(conn, "photos", [(1, 2)], {1: "f1", 2: "f2"}, 1) == {}


def test_a_read_only_database_is_not_an_error(tmp_path):
    path = tmp_path / "x.db"
    sqlite3.connect(path).close()
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    assert verdicts.save(conn, "photos", {(1, 2): CROP}, {}, 1) == 0
