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

from .helpers import jpeg_bytes, process_group


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


# --- Bombs: small files that would cost minutes of CPU or gigabytes of memory ---------------

def png16_bomb(width=9400, height=9400):
    """A 16-bit greyscale PNG of ~190 KB that decodes to 88 MP (it once cost 2.2 GB: a
    full-size float64 copy)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    compressor = zlib.compressobj(9)
    row = b"\x00" + b"\x12\x34" * width
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


def float_tiff_bomb(side=7000):
    """A float32 TIFF, deflated to a few hundred KB (it once cost 2.4 GB)."""
    return encode(Image.new("F", (side, side), 3.5), "TIFF", compression="tiff_deflate")


def scan_bomb(side=8000, repeats=2000):
    """A progressive JPEG whose last scan is repeated: 440 KB, 42 s of decoding once."""
    data = encode(Image.new("L", (side, side), 128), "JPEG", progressive=True, quality=90)
    last = data.rindex(b"\xff\xda")
    return data[:-2] + data[last:-2] * repeats + b"\xff\xd9"


def test_scan_bomb_is_refused_before_decoding():
    from datasette_imgsim.images import jpeg_scans

    bomb = scan_bomb(2000, 300)
    assert jpeg_scans(bomb) > 100
    started = time.monotonic()
    with pytest.raises(ImageError, match="scan"):
        load_image(bomb, 256)
    assert time.monotonic() - started < 1
    # A plain progressive JPEG has its usual handful of scans and decodes.
    normal = encode(Image.new("RGB", (640, 480), (10, 200, 30)), "JPEG", progressive=True)
    assert 2 <= jpeg_scans(normal) <= 12
    assert load_image(normal, 64).shape[2] == 3
    # An EXIF thumbnail's own scan inside APP1 is not counted.
    exif = Image.Exif()
    exif[0x0112] = 1
    assert jpeg_scans(encode(Image.new("RGB", (64, 64)), "JPEG", exif=exif.tobytes())) == 1


def test_memory_is_estimated_and_refused_before_decoding():
    """A header that promises more than MAX_DECODE_BYTES is refused without decoding;
    Pillow's 89.5 MP warning is not the limit (MAX_PIXELS is, as the README says)."""
    from datasette_imgsim import images

    ihdr = struct.pack(">IIBBBBB", 12000, 12000, 16, 6, 0, 0, 0)  # 16-bit RGBA, 144 MP
    header_only = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", b"") \
        + png_chunk(b"IEND", b"")
    with pytest.raises(ImageError, match="too large to decode"):
        load_image(header_only, 256)
    assert images.MAX_PIXELS > Image.MAX_IMAGE_PIXELS  # 150 MP, not Pillow's 89.5 MP
    ihdr = struct.pack(">IIBBBBB", 10000, 9500, 8, 0, 0, 0, 0)  # 95 MP greyscale
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(b"\x00" * 10001) for _ in range(9500)) + compressor.flush()
    grey = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", data) \
        + png_chunk(b"IEND", b"")
    assert 256 <= min(load_image(grey, 256).shape[:2]) < 300


def test_high_bit_depth_is_reduced_before_it_is_converted():
    from datasette_imgsim.images import open_image

    img = Image.fromarray(np.arange(0, 60000, 15, dtype=np.uint16).reshape(80, 50))
    assert img.mode.startswith("I;16")
    pixels = np.asarray(open_image(encode(img, "PNG"), 16))
    assert pixels.shape == (80 // 3, 50 // 3, 3) and pixels.max() >= 250 and pixels.min() <= 5
    floats = Image.fromarray(np.linspace(-1, 1000, 4000, dtype=np.float32).reshape(80, 50))
    assert np.asarray(open_image(encode(floats, "TIFF"), 0)).max() == 255


def _rss_of_group(pgid: int, peaks: dict) -> int:
    """Sum of VmRSS over process group pgid now; peaks[pid] keeps each one's VmHWM."""
    group = process_group(pgid)
    for pid, memory in group.items():
        peaks[pid] = max(peaks.get(pid, 0), memory["hwm"])
    return sum(memory["rss"] for memory in group.values())


def run_bounded(command, seconds, memory_limit=8 * 1024 ** 3):
    """Run command in its own process group under an address-space limit; returns
    (completed process, wall seconds, peak summed RSS, largest per-process peak)."""
    import resource
    import subprocess

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))

    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True, preexec_fn=limit)
    started, peaks, total = time.monotonic(), {}, 0
    while process.poll() is None and time.monotonic() - started < seconds:
        total = max(total, _rss_of_group(process.pid, peaks))
        time.sleep(0.05)
    wall = time.monotonic() - started
    if process.poll() is None:
        import os
        import signal

        os.killpg(process.pid, signal.SIGKILL)
    out, err = process.communicate()
    process.stdout_text, process.stderr_text = out, err
    return process, wall, total, max(peaks.values() or [0])


def test_bomb_corpus_index_run_is_bounded(tmp_path):
    """Every bomb and odd row of the issue in one run: each an error row with a readable
    message, the good image indexed, in bounded time and memory (measured from /proc)."""
    import os
    import sys

    folder = tmp_path / "files"
    folder.mkdir()
    files = {"scan-bomb.jpg": scan_bomb(), "png16-bomb.png": png16_bomb(),
             "float-bomb.tif": float_tiff_bomb(), "good.png": encode(Image.new("RGB", (300, 200), (9, 99, 199)), "PNG")}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    os.mkfifo(folder / "fifo.jpg")
    (folder / "zero.jpg").symlink_to("/dev/zero")
    db = tmp_path / "bombs.db"
    conn = sqlite3.connect(db)
    conn.execute("create table files (name text primary key, image)")
    rows = [(name, f"files/{name}") for name in [*files, "fifo.jpg", "zero.jpg"]]
    rows += [("dev-zero", "/dev/zero"), ("nul", "files/a\x00b.jpg"), ("number", 42),
             ("float", 4.5), ("enormous", "x" * 1_000_000)]
    conn.executemany("insert into files values (?, ?)", rows)
    # Text that is not valid UTF-8 (a file name in another encoding).
    conn.execute("insert into files values ('latin1', cast(X'66696c65732f63616ce92e6a7067' as text))")
    conn.commit()
    conn.close()
    command = [sys.executable, "-m", "datasette", "imgsim", "index", str(db), "--table", "files",
               "--column", "image", "--method", "phash", "--method", "histogram", "--workers", "2",
               "--in-place"]
    process, wall, total, largest = run_bounded(command, 60)
    print(f"bomb corpus run: {wall:.1f} s, peak {total / 2**20:.0f} MB in all, "
          f"{largest / 2**20:.0f} MB in one process")
    assert process.returncode == 0, process.stderr_text[-2000:]
    assert wall < 30, wall
    assert largest < 1024 ** 3, f"a process of the run peaked at {largest / 2**20:.0f} MB"
    assert total < 1.5 * 1024 ** 3, f"the run peaked at {total / 2**20:.0f} MB"
    # The 16-bit and float bombs are images: decoded, reduced first, in bounded memory.
    assert "3 indexed, 0 unchanged, 0 removed, 9 failed" in process.stdout_text, process.stdout_text
    errors = dict(sqlite3.connect(db).execute(
        "select pk, error from _imgsim_errors where method = 'phash'"))
    for name, message in errors.items():
        assert message and len(message) < 300 and "Traceback" not in message, (name, message)
    assert "scan" in errors["scan-bomb.jpg"]
    assert "regular file" in errors["fifo.jpg"] and "regular file" in errors["zero.jpg"]
    assert "regular file" in errors["dev-zero"]
    assert "NUL" in errors["nul"] and "too long" in errors["enormous"]
    assert "not an image path" in errors["number"] and "not an image path" in errors["float"]
    assert "not found" in errors["latin1"]
    assert not {"png16-bomb.png", "float-bomb.tif", "good.png"} & set(errors)
