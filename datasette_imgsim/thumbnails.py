"""Thumbnails: find a row's image safely under the index root, shrink it, cache the result.

Pure of Datasette: views.py fetches the row's value and calls these.
"""
from __future__ import annotations

import hashlib
import io
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from .errors import ImageError, MissingImage, OutsideRoot, ThumbnailError  # noqa: F401 (re-exported)
from .files import allowed_file
from .images import KIND_KEY, open_image, read_file, read_source
from .source import blob_fingerprint, file_fingerprint

DEFAULT_SIZE = 256
MIN_SIZE = 16
MAX_SIZE = 1600
FORMATS = {"jpeg": ("JPEG", "image/jpeg"), "webp": ("WEBP", "image/webp")}
# Bump when the output of make_thumbnail changes, so cached copies and ETags expire.
VERSION = "2"  # 2: video badge


def parse_size(value: Any) -> int:
    """?size=N, clamped to a sane range; anything unparseable gets the default."""
    try:
        size = int(value)
    except (TypeError, ValueError):
        return DEFAULT_SIZE
    return max(MIN_SIZE, min(MAX_SIZE, size))


def parse_format(value: Any) -> str:
    return value if value in FORMATS else "jpeg"


@dataclass(frozen=True)
class ImageSource:
    """Where a row's image comes from, and what identifies this version of it."""

    data: Optional[bytes]
    path: Optional[Path]
    fingerprint: str

    def read(self) -> bytes:
        if self.data is not None:
            return self.data
        try:
            return read_source(self.path)
        except ImageError as e:
            raise MissingImage(str(e)) from None


def image_source(value: Any, base: Optional[str], roots=None) -> ImageSource:
    """A row's image column value (BLOB or path) as an ImageSource; a path must name a
    regular file under one of roots (default: base, the index's root)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        if not data:
            raise MissingImage("this row's image is empty")
        return ImageSource(data, None, blob_fingerprint(data))
    if value is None or not str(value).strip():
        raise MissingImage("this row has no image")
    path = allowed_file(str(value).strip(), base or ".", [base] if roots is None else roots)
    try:
        stat = path.stat()
    except OSError:
        raise MissingImage("image file cannot be read") from None
    return ImageSource(None, path, f"{file_fingerprint(stat)}:{path}")


def cache_key(source: ImageSource, size: int, fmt: str) -> str:
    text = f"{VERSION}\0{source.fingerprint}\0{size}\0{fmt}"
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def video_badge(img) -> None:
    """A play sign in the corner of a video's frame, so a thumbnail says what it stands for."""
    from PIL import ImageDraw

    side = max(12, min(img.size) // 5)
    margin = max(3, side // 4)
    x, y = margin, img.height - margin - side
    draw = ImageDraw.Draw(img, "RGBA")
    draw.ellipse((x, y, x + side, y + side), fill=(0, 0, 0, 150))
    inset = side // 4
    draw.polygon([(x + inset * 1.3, y + inset), (x + inset * 1.3, y + side - inset),
                  (x + side - inset, y + side / 2)], fill=(255, 255, 255, 230))


def make_thumbnail(data, size: int, fmt: str = "jpeg") -> bytes:
    """Encoded image bytes (or an image file: videos are read in place) shrunk to fit a
    size x size box, upright (EXIF applied), RGB; a video's frame carries a play badge."""
    pil_format, _ = FORMATS[fmt]
    img = open_image(data, min_size=size)
    kind = img.info.get(KIND_KEY)
    img.thumbnail((size, size))
    if kind == "video":
        video_badge(img)
    out = io.BytesIO()
    img.save(out, pil_format, quality=82)
    return out.getvalue()


def data_url(data: bytes, size: int) -> str:
    """A small inline JPEG of image bytes, to show an uploaded image back to the user."""
    import base64

    return "data:image/jpeg;base64," + base64.b64encode(make_thumbnail(data, size)).decode("ascii")


class MemoryCache:
    """An LRU of encoded thumbnails, bounded by total bytes."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024):
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> Optional[bytes]:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: str, value: bytes) -> None:
        if len(value) > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= len(old)
            self._items[key] = value
            self._bytes += len(value)
            while self._bytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= len(dropped)

    def __len__(self) -> int:
        return len(self._items)


class DiskCache:
    """Thumbnails as files named by their key; written atomically, never trusted beyond it."""

    def __init__(self, directory: Union[str, os.PathLike]):
        self.directory = Path(directory)

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / key

    def get(self, key: str) -> Optional[bytes]:
        try:
            return self._path(key).read_bytes()
        except OSError:
            return None

    def put(self, key: str, value: bytes) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{key}.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_bytes(value)
            os.replace(tmp, path)
        except OSError:
            # A cache that cannot be written only costs speed.
            pass


_caches: dict = {}
_caches_lock = threading.Lock()


def get_cache(directory: Optional[str] = None, max_bytes: Optional[int] = None):
    """One shared cache per directory (or the in-memory one), for the life of the process."""
    key = ("disk", str(directory)) if directory else ("memory", max_bytes)
    with _caches_lock:
        if key not in _caches:
            _caches[key] = DiskCache(directory) if directory else MemoryCache(
                max_bytes or 64 * 1024 * 1024)
        return _caches[key]


_making: dict[str, threading.Lock] = {}
_making_lock = threading.Lock()


def thumbnail(source: ImageSource, size: int, fmt: str, cache) -> bytes:
    """The thumbnail for source, from cache or made now (ImageError if it is not an image).

    Concurrent requests for the same thumbnail (a page of thumbnails opened by many
    clients at once) make it once: the others wait for it and read the cache."""
    key = cache_key(source, size, fmt)
    found = cache.get(key)
    if found is not None:
        return found
    with _making_lock:
        lock = _making.setdefault(key, threading.Lock())
    try:
        with lock:
            found = cache.get(key)
            if found is not None:
                return found
            # A file is opened by path: a video is then read in place, a frame, not whole.
            made = make_thumbnail(source.data if source.data is not None else source.path,
                                  size, fmt)
            cache.put(key, made)
            return made
    finally:
        with _making_lock:
            if _making.get(key) is lock and not lock.locked():
                del _making[key]


# --- full-size images (the lightbox and "original file") ---------------------------------

LARGE_RENDER = 2048
DEFAULT_MAX_FULL_BYTES = 200 * 1024 * 1024
NATIVE = (  # what every browser shows as is: served as the original bytes
    (b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"), (b"GIF89a", "image/gif"),
)


def native_type(head: bytes) -> Optional[str]:
    """The content type of a browser-native image (JPEG, PNG, GIF, WebP), else None."""
    for magic, content_type in NATIVE:
        if head.startswith(magic):
            return content_type
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def source_size(source: ImageSource) -> int:
    if source.data is not None:
        return len(source.data)
    try:
        return source.path.stat().st_size
    except OSError:
        raise MissingImage("image file cannot be read") from None


def _head(source: ImageSource) -> bytes:
    if source.data is not None:
        return source.data[:16]
    try:
        return read_file(source.path, head=16)  # a regular file only: never blocks on a FIFO
    except ImageError:
        raise MissingImage("image file cannot be read") from None


def full_image(source: ImageSource, cache, max_bytes: int = DEFAULT_MAX_FULL_BYTES) -> tuple[bytes, str]:
    """(body, content type): the original bytes of a browser-native image, or a large
    JPEG rendering (LARGE_RENDER px) of anything else (RAW, HEIC, TIFF, a video's frame).
    ThumbnailError (413) for a file over max_bytes, before it is read."""
    size = source_size(source)
    if size > max_bytes:
        raise ThumbnailError(f"image too large to serve: {size / 1e6:.0f} MB, the limit is "
                             f"{max_bytes / 1e6:.0f} MB (plugin config max_image_bytes)", 413)
    content_type = native_type(_head(source))
    if content_type:
        return source.read(), content_type
    return thumbnail(source, LARGE_RENDER, "jpeg", cache), "image/jpeg"


def download_name(source: ImageSource, fallback: str, content_type: str) -> str:
    """The file name a browser saves the image as: the original's, or fallback plus the
    extension of what is sent (a rendering of a RAW file is a .jpg)."""
    extension = {"image/jpeg": ".jpg", "image/png": ".png", "image/gif": ".gif",
                 "image/webp": ".webp"}[content_type]
    if source.path is not None:
        name = source.path.name
        return name if native_type(_head(source)) else f"{source.path.stem}{extension}"
    return f"{fallback}{extension}"


def content_disposition(name: str) -> str:
    """inline; filename="..." (ASCII, quotes dropped) and filename*= for the real name."""
    from urllib.parse import quote

    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in name)
    return f"inline; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"
