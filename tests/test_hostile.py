"""Hostile files through the whole pipeline: no crash, no hang, each a readable error, the rest indexed."""
import io
import sqlite3
import struct
import time
import zlib

import numpy as np
import pytest
from click.testing import CliRunner
from datasette.cli import cli
from PIL import Image

from datasette_imgsim.images import ImageError, load_image
from datasette_imgsim.plugins import get_method

from .helpers import jpeg_bytes


def encode(img, fmt, **kw):
    out = io.BytesIO()
    img.save(out, fmt, **kw)
    return out.getvalue()


def png_chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png(width, height, data=b""):
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


def png_bomb():
    """A 20000 x 20000 all-black PNG: tiny on disk, 400 MP once decoded."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * 20001
    data = b"".join(compressor.compress(row) for _ in range(20000)) + compressor.flush()
    return png(20000, 20000, data)


def exif_jpeg(pixels, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(Image.fromarray(pixels), "JPEG", exif=exif.tobytes())


def hostile_corpus(photos):
    rng = np.random.default_rng(7)
    coffee = Image.fromarray(photos["coffee"])
    jpeg = jpeg_bytes(photos["coffee"])
    return {
        "truncated.jpg": jpeg[: len(jpeg) // 3],
        "truncated.png": encode(coffee, "PNG")[:5000],
        "truncated.webp": encode(coffee, "WEBP")[:3000],
        "truncated.gif": encode(coffee.convert("P"), "GIF")[:2000],
        "png-named.jpg": b"\x89PNG\r\n\x1a\n" + b"\x00" * 100,
        "header-1x1.png": png(1, 1),
        "header-30000x30000.png": png(30000, 30000),
        "zero-length.jpg": b"",
        "random.jpg": rng.integers(0, 256, 50_000, dtype=np.uint8).tobytes(),
        "bomb.png": png_bomb(),
        "text.jpg": b"Dear diary, today I took no photos.\n" * 20,
        "html.png": b"<!doctype html><html><body>404 Not Found</body></html>",
        "jpeg-header-only.jpg": jpeg[:200],
    }


def survivors(photos):
    """Odd but valid files: these must index, not fail."""
    return {
        "exif-orientation-999.jpg": exif_jpeg(photos["chelsea"], 999),
        "exif-orientation-0.jpg": exif_jpeg(photos["rocket"], 0),
        "one-pixel.png": encode(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"),
        "wrong-extension.png": jpeg_bytes(photos["astronaut"]),
        "tall-thin.png": encode(Image.new("L", (3, 4000), 128), "PNG"),
    }


def test_loader_rejects_each_with_a_readable_message(photos):
    for name, data in hostile_corpus(photos).items():
        started = time.monotonic()
        with pytest.raises(ImageError) as raised:
            load_image(data, 256)
        assert time.monotonic() - started < 10, name
        message = str(raised.value)
        assert message and "Traceback" not in message and len(message) < 300, (name, message)


def test_every_method_handles_odd_but_valid_images(photos):
    for name, data in survivors(photos).items():
        for method_name in ["histogram", "hog", "phash", "cnn"]:
            method = get_method(method_name)
            pixels = load_image(data, method.min_size)
            vectors = method.vectors_for(method.extract([pixels]).vectors, method.metric)
            assert np.isfinite(vectors.astype(np.float32)).all(), (name, method_name)


@pytest.mark.parametrize("storage", ["path", "blob"])
def test_indexing_a_hostile_batch(tmp_path, photos, storage):
    bad = hostile_corpus(photos)
    good = {**survivors(photos), **{f"{n}.jpg": jpeg_bytes(p) for n, p in photos.items()}}
    folder = tmp_path / "files"
    folder.mkdir()
    db = tmp_path / "hostile.db"
    conn = sqlite3.connect(db)
    conn.execute("create table files (name text primary key, image)")
    for name, data in sorted({**bad, **good}.items()):
        if storage == "path":
            (folder / name).write_bytes(data)
            conn.execute("insert into files values (?, ?)", (name, f"files/{name}"))
        else:
            conn.execute("insert into files values (?, ?)", (name, data))
    conn.commit()
    started = time.monotonic()
    result = CliRunner().invoke(cli, ["imgsim", "index", str(db), "--table", "files", "--column", "image",
                                      "--method", "phash", "--method", "histogram", "--workers", "2",
                                      "--in-place"])
    assert time.monotonic() - started < 120
    assert result.exit_code == 0, result.output
    # Zero-length BLOBs count as "no image" rather than as errors; zero-length files are errors.
    empty_blobs = 1 if storage == "blob" else 0
    assert f"{len(good)} indexed, 0 unchanged, 0 removed, {len(bad) - empty_blobs} failed" in result.output
    errors = dict(conn.execute("select pk, error from _imgsim_errors where method = 'phash'"))
    assert set(errors) == set(bad) - ({"zero-length.jpg"} if storage == "blob" else set())
    for name, message in errors.items():
        assert message and len(message) < 300, (name, message)
    assert "too large" in errors["bomb.png"] and "too large" in errors["header-30000x30000.png"]
