"""finder.verified_duplicates end to end: a table indexed into its sidecar, grouped with
the defaults, versions apart, verdicts kept in the sidecar only, workers in processes."""
from __future__ import annotations

import hashlib
import json
import sqlite3

import numpy as np
import pytest
from click.testing import CliRunner
from datasette.cli import cli

from datasette_imgsim import ImageIndex, finder

from . import format_files as ff
from .helpers import index_photos, jpeg_bytes


@pytest.fixture
def library(tmp_path, photos):
    """coffee with a crop and a re-encode; a RAW+JPEG pair of one shot of the rocket;
    two unrelated photos. Indexed (phash) into the default sidecar."""
    folder = tmp_path / "lib"
    folder.mkdir()
    coffee, rocket = photos["coffee"], photos["rocket"]
    files = {"coffee.jpg": jpeg_bytes(coffee, 95), "coffee_q30.jpg": jpeg_bytes(coffee, 30),
             "coffee_crop.jpg": jpeg_bytes(coffee[40:360, 60:540]),
             "IMG_0042.dng": ff.dng_bytes(np.ascontiguousarray(rocket[:424, :636])),
             "IMG_0042.jpg": jpeg_bytes(np.ascontiguousarray(rocket[:424, :636])),
             "astronaut.jpg": jpeg_bytes(photos["astronaut"]),
             "hubble.jpg": jpeg_bytes(photos["hubble"])}
    db = tmp_path / "photos.db"
    conn = sqlite3.connect(db)
    conn.execute("create table photos (id integer primary key, path text)")
    for name, data in files.items():
        (folder / name).write_bytes(data)
        conn.execute("insert into photos (path) values (?)", (f"lib/{name}",))
    conn.commit()
    conn.close()
    index_photos(db, "phash", in_place=False)
    return db


def by_path(found):
    return [{m.image.split("/")[-1]: m.kind for m in g.members} for g in found.groups]


def test_groups_versions_and_a_sidecar_cache(library):
    before = hashlib.sha256(library.read_bytes()).hexdigest()
    result = CliRunner().invoke(cli, ["imgsim", "duplicates", str(library), "--table", "photos",
                                      "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    groups = [{m["image"].split("/")[-1]: m["kind"] for m in g["members"]} for g in data["groups"]]
    assert groups == [{"coffee.jpg": "best copy", "coffee_crop.jpg": "crop",
                       "coffee_q30.jpg": "same picture"}]
    (versions,) = data["versions"]
    assert {m["image"] for m in versions["members"]} == {"lib/IMG_0042.dng", "lib/IMG_0042.jpg"}
    assert versions["members"][0]["reason"] == "RAW+JPG pair of one shot"
    best = data["groups"][0]["members"][0]
    assert best["reason"] and best["jpeg_quality"] == 95 and best["file"].endswith("coffee.jpg")
    # Nothing was written to the photo database; the verdicts are in the sidecar.
    assert hashlib.sha256(library.read_bytes()).hexdigest() == before
    sidecar = library.with_name("photos-imgsim.db")
    stored = sqlite3.connect(sidecar).execute("select count(*) from _imgsim_verdicts").fetchone()
    assert stored[0] == data["pairs"]["verified"] + data["pairs"]["settled"] > 0
    with ImageIndex.open(library) as images:
        again = images.duplicates("photos")
    assert again.counts["cached"] == stored[0] and again.counts["verified"] == 0
    assert by_path(again) == groups


def test_worker_processes_decide_as_the_caller_does(library, monkeypatch):
    from datasette_imgsim import copies_pool

    sent = []
    real = copies_pool.decide_in_workers

    def spy(parts, *args):
        sent.extend(parts)
        return real(parts, *args)

    with ImageIndex.open(library) as images:
        here = images.duplicates("photos", save=False)
        monkeypatch.setattr(finder, "PARALLEL_MIN_PAIRS", 0)
        monkeypatch.setattr(copies_pool, "decide_in_workers", spy)
        there = images.duplicates("photos", workers=2, save=False)
    assert len(sent) >= 2  # every component went to the workers
    assert by_path(there) == by_path(here) and there.counts == here.counts
    assert there.counts["verified"] + there.counts["settled"] > 0


def test_a_time_budget_leaves_pairs_unverified(library):
    with ImageIndex.open(library) as images:
        found = images.duplicates("photos", seconds=1e-9, save=False)
    assert found.unverified > 0 and found.groups == []
