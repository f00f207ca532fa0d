"""What tests (and the benchmarks) share: real photos from scikit-image, encoders, and
shortcuts to index a test database and read it back."""
from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import numpy as np
from PIL import Image

# Names the tests and benchmarks use for scikit-image photos that are not data.<name>().
ALIASES = {"motorcycle": lambda data: data.stereo_motorcycle()[0],
           "hubble": lambda data: data.hubble_deep_field()}


def photo(name: str) -> np.ndarray:
    """A real photo bundled with scikit-image as RGB uint8 (greyscale ones as three channels)."""
    import skimage.data as data

    pixels = ALIASES[name](data) if name in ALIASES else getattr(data, name)()
    if pixels.dtype != np.uint8:
        pixels = (pixels * 255).astype(np.uint8) if pixels.max() <= 1 else pixels.astype(np.uint8)
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


def index_photos(db: Path, *methods: str, column: str = "path", extra=(), in_place: bool = True) -> Path:
    """`datasette imgsim index` over a test database's photos table in one worker. In the
    database itself by default: most tests look at the index, not where it lives
    (test_sidecar.py and the app tests check the default, a sidecar)."""
    from click.testing import CliRunner
    from datasette.cli import cli

    args = ["imgsim", "index", str(db), "--table", "photos", "--column", column]
    for method in methods:
        args += ["--method", method]
    if in_place:
        args.append("--in-place")
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


def is_datasette_1() -> bool:
    from datasette import __version__
    from packaging.version import parse

    return parse(__version__) >= parse("1.0a0")


def make_datasette(*paths, private_table: bool = False, plugin_config=None):
    """A test Datasette over the files, optionally with the photos table visible to root only."""
    from datasette_test import Datasette

    kwargs = {}
    if private_table:
        # Table allow blocks live in metadata on 0.65 and in datasette.yaml on 1.0a.
        block = {"databases": {"photos": {"tables": {"photos": {"allow": {"id": "root"}}}}}}
        kwargs["config" if is_datasette_1() else "metadata"] = block
    if plugin_config:
        kwargs["plugin_config"] = {"datasette-imgsim": plugin_config}
    return Datasette([str(p) for p in paths], **kwargs)


def label_photos(db: Path, where: str, label: str = "tabby cat") -> None:
    """Give the photos matching a WHERE clause a top label in the database's first index,
    as the cnn method would (so tests of label chips need not run the network)."""
    conn = sqlite3.connect(db)
    conn.execute("insert into _imgsim_labels (item_id, table_name, pk, rank, label, probability) "
                 "select item_id, 'photos', pk, 1, ?, 0.9 from _imgsim_items "
                 f"where pk in (select id from photos where {where}) "
                 "and index_id = (select min(id) from _imgsim_indexes)", (label,))
    conn.commit()
    conn.close()


def process_group(pgid: int) -> dict[int, dict]:
    """The live (not zombie) processes of process group pgid, from /proc: pid ->
    {"rss", "hwm"} in bytes (Linux only; the tests and benchmarks that use it run there)."""
    import os

    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            if int(fields[2]) != pgid or fields[0] == b"Z":
                continue
            with open(f"/proc/{entry}/status") as f:
                status = dict(line.split(":", 1) for line in f if ":" in line)
        except (OSError, ValueError, IndexError):
            continue
        found[int(entry)] = {key: int(status.get(name, "0 kB").split()[0]) * 1024
                             for key, name in (("rss", "VmRSS"), ("hwm", "VmHWM"))}
    return found
