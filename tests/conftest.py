"""Fixtures: real photos (scikit-image's bundled ones) and photo databases built from them."""
from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

PHOTO_NAMES = ["astronaut", "chelsea", "coffee", "rocket", "motorcycle", "hubble", "retina", "coins"]


def photo(name: str) -> np.ndarray:
    import skimage.data as data

    if name == "motorcycle":
        return data.stereo_motorcycle()[0]
    if name == "hubble":
        return data.hubble_deep_field()
    pixels = getattr(data, name)()
    return np.stack([pixels] * 3, axis=-1) if pixels.ndim == 2 else pixels[..., :3]


def jpeg_bytes(pixels: np.ndarray, quality: int = 90, **save) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=quality, **save)
    return out.getvalue()


def heic_bytes(pixels: np.ndarray, quality: int = 85) -> bytes:
    """An iPhone-style HEIC file (pillow-heif's encoder), as phones save photos."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "HEIF", quality=quality)
    return out.getvalue()


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


def index_photos(db: Path, *methods: str, column: str = "path", extra=()) -> Path:
    """`datasette imgsim index` over a test database's photos table in one worker."""
    from click.testing import CliRunner
    from datasette.cli import cli

    args = ["imgsim", "index", str(db), "--table", "photos", "--column", column]
    for method in methods:
        args += ["--method", method]
    result = CliRunner().invoke(cli, [*args, "--workers", "1", *extra])
    assert result.exit_code == 0, result.output
    return db


def query_dict(db: Path, sql: str, params=()) -> dict:
    """The two-column result of sql as a dict (first column -> second)."""
    conn = sqlite3.connect(db)
    try:
        return dict(conn.execute(sql, params))
    finally:
        conn.close()


def row_ids(db: Path, sql: str, params=()) -> list:
    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute(sql, params)]
    finally:
        conn.close()
