"""Fixtures: real photos (scikit-image's bundled ones) and photo databases built from them.
Shared functions live in helpers.py (re-exported here for older imports)."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from .helpers import heic_bytes, index_photos, jpeg_bytes, photo, query_dict, row_ids  # noqa: F401

PHOTO_NAMES = ["astronaut", "chelsea", "coffee", "rocket", "motorcycle", "hubble", "retina", "coins"]


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    return {name: photo(name) for name in PHOTO_NAMES}


@pytest.fixture
def photo_dir(tmp_path, photos) -> Path:
    folder = tmp_path / "img"
    folder.mkdir()
    for name, pixels in photos.items():
        (folder / f"{name}.jpg").write_bytes(jpeg_bytes(pixels))
    # An edited copy: a crop of chelsea, which every method should find near the original.
    (folder / "chelsea_crop.jpg").write_bytes(jpeg_bytes(photos["chelsea"][15:285, 20:430]))
    return folder


@pytest.fixture
def path_db(tmp_path, photo_dir) -> Path:
    """A photos table of relative file paths, like a photo app's."""
    db = tmp_path / "photos.db"
    conn = sqlite3.connect(db)
    conn.execute("create table photos (id integer primary key, title text, path text)")
    for file in sorted(photo_dir.iterdir()):
        conn.execute("insert into photos (title, path) values (?, ?)", (file.stem, f"img/{file.name}"))
    conn.commit()
    conn.close()
    return db


@pytest.fixture
def blob_db(tmp_path, photos) -> Path:
    """A photos table holding the JPEG bytes themselves, with text keys."""
    db = tmp_path / "blobs.db"
    conn = sqlite3.connect(db)
    conn.execute("create table photos (name text primary key, image blob)")
    for name, pixels in photos.items():
        conn.execute("insert into photos values (?, ?)", (name, jpeg_bytes(pixels)))
    conn.commit()
    conn.close()
    return db
