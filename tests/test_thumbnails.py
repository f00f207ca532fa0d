"""thumbnails.py on its own: sources, making, caching (path rules: test_files.py)."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from datasette_imgsim import thumbnails
from datasette_imgsim.images import ImageError
from datasette_imgsim.thumbnails import (DiskCache, MemoryCache, MissingImage, OutsideRoot,
                                         cache_key, image_source, make_thumbnail, parse_size)

from .helpers import heic_bytes, jpeg_bytes


@pytest.fixture
def root(tmp_path):
    folder = tmp_path / "root"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "a.jpg").write_bytes(jpeg_bytes(np.zeros((30, 60, 3), "uint8")))
    (tmp_path / "secret.jpg").write_bytes(jpeg_bytes(np.zeros((10, 10, 3), "uint8")))
    return folder


def test_image_source(root):
    blob = jpeg_bytes(np.zeros((8, 8, 3), "uint8"))
    source = image_source(blob, None)
    assert source.read() == blob and source.fingerprint.startswith("blob:")
    path_source = image_source("sub/a.jpg", str(root))
    assert path_source.read() == (root / "sub" / "a.jpg").read_bytes()
    for value in [None, "", b"", "sub/missing.jpg", "sub"]:
        with pytest.raises(MissingImage):
            image_source(value, str(root))
    with pytest.raises(OutsideRoot):
        image_source("../secret.jpg", str(root))
    # Another allowed root (the photos' own folders) serves what the index root does not.
    assert image_source(str(root.parent / "secret.jpg"), str(root), [str(root), str(root.parent)]).path


def test_make_thumbnail_fits_box_and_applies_exif(photos):
    img = Image.fromarray(photos["coffee"])  # 600x400
    exif = img.getexif()
    exif[0x0112] = 8
    out = io.BytesIO()
    img.save(out, "JPEG", exif=exif)
    thumb = Image.open(io.BytesIO(make_thumbnail(out.getvalue(), 90)))
    assert thumb.format == "JPEG" and thumb.size == (60, 90)
    webp = Image.open(io.BytesIO(make_thumbnail(out.getvalue(), 90, "webp")))
    assert webp.format == "WEBP"
    with pytest.raises(ImageError):
        make_thumbnail(b"not an image", 90)


def test_parse_size_and_format():
    assert parse_size(None) == thumbnails.DEFAULT_SIZE
    assert parse_size("abc") == thumbnails.DEFAULT_SIZE
    assert parse_size("1") == thumbnails.MIN_SIZE
    assert parse_size("99999") == thumbnails.MAX_SIZE
    assert parse_size("120") == 120
    assert thumbnails.parse_format("webp") == "webp"
    assert thumbnails.parse_format("gif") == "jpeg"


def test_cache_key_follows_content(root):
    a = image_source("sub/a.jpg", str(root))
    assert cache_key(a, 100, "jpeg") == cache_key(image_source("sub/a.jpg", str(root)), 100, "jpeg")
    assert cache_key(a, 100, "jpeg") != cache_key(a, 101, "jpeg")
    assert cache_key(a, 100, "jpeg") != cache_key(a, 100, "webp")
    (root / "sub" / "a.jpg").write_bytes(jpeg_bytes(np.ones((31, 60, 3), "uint8")))
    assert cache_key(image_source("sub/a.jpg", str(root)), 100, "jpeg") != cache_key(a, 100, "jpeg")


def test_memory_cache_is_a_bounded_lru():
    cache = MemoryCache(max_bytes=10)
    cache.put("a", b"1234")
    cache.put("b", b"1234")
    assert cache.get("a") == b"1234"  # a is now the most recent
    cache.put("c", b"1234")
    assert cache.get("b") is None and cache.get("a") and cache.get("c")
    cache.put("huge", b"x" * 11)
    assert cache.get("huge") is None and len(cache) == 2


def test_disk_cache_and_thumbnail(tmp_path, root):
    cache = DiskCache(tmp_path / "cache")
    assert cache.get("0123abcd") is None
    source = image_source("sub/a.jpg", str(root))
    made = thumbnails.thumbnail(source, 20, "jpeg", cache)
    assert Image.open(io.BytesIO(made)).size == (20, 10)
    assert cache.get(cache_key(source, 20, "jpeg")) == made
    assert list((tmp_path / "cache").rglob("*.tmp")) == []
    assert thumbnails.get_cache(str(tmp_path / "cache")) is thumbnails.get_cache(str(tmp_path / "cache"))


def test_concurrent_requests_make_a_thumbnail_once(root, monkeypatch):
    import threading
    import time

    calls = []
    real = thumbnails.make_thumbnail

    def slow_make(data, size, fmt="jpeg"):
        calls.append(size)
        time.sleep(0.2)
        return real(data, size, fmt)

    monkeypatch.setattr(thumbnails, "make_thumbnail", slow_make)
    cache = MemoryCache()
    source = image_source("sub/a.jpg", str(root))
    results = []
    threads = [threading.Thread(target=lambda: results.append(thumbnails.thumbnail(source, 24, "jpeg", cache)))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == [24] and len(set(results)) == 1 and len(results) == 8
    assert thumbnails._making == {}


def test_heic_thumbnail_is_a_jpeg(photos):
    thumb = Image.open(io.BytesIO(thumbnails.make_thumbnail(heic_bytes(photos["astronaut"]), 64)))
    assert thumb.format == "JPEG" and max(thumb.size) == 64


def test_video_thumbnail_is_a_frame_with_a_play_badge(tmp_path, photos):
    from .format_files import video_file

    frame = np.ascontiguousarray(photos["chelsea"][:, :, :])
    path = tmp_path / "clip.mp4"
    video_file(path, [(frame, 30)])
    thumb = Image.open(io.BytesIO(make_thumbnail(path, 200)))
    plain = Image.fromarray(frame)
    plain.thumbnail((200, 200))
    assert thumb.size == plain.size
    pixels, expected = np.asarray(thumb, np.int16), np.asarray(plain, np.int16)
    h = thumb.height
    # The picture is the video's frame (the encoder drifts it a little) ...
    top = np.corrcoef(pixels[: h // 2].ravel(), expected[: h // 2].ravel())[0, 1]
    assert top > 0.8
    # ... and the badge, a dark disc with a white triangle, sits in the lower-left corner.
    corner = slice(h - h // 4, h), slice(0, h // 4)
    assert np.abs(pixels[corner] - expected[corner]).mean() > 3 * np.abs(
        pixels[: h // 2] - expected[: h // 2]).mean()
