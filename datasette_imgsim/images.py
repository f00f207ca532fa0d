"""The one place images are read: open, guard, reduced decode, orient, to RGB.

Photos (Pillow), HEIC/HEIF/AVIF (pillow-heif, embedded thumbnails where large
enough), camera RAW (rawpy: embedded JPEG preview or half-size demosaic) and videos
(OpenCV: one representative frame). The decoder is chosen from the bytes, never the
file name (formats.sniff). Images returned by open_image carry
``info["imgsim_kind"]`` ("image", "heif", "raw" or "video": a page can badge videos)
and ``info["imgsim_path"]`` (how they were decoded, see formats).
"""
from __future__ import annotations

import io
import os
import struct
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from . import formats
from .errors import ImageError
from .formats import HEIF_BRANDS, KIND_KEY, PATH_KEY  # noqa: F401 (re-exported)

# Above the largest cameras (100 MP medium format) yet a bound on what one decode
# may allocate (a PNG or TIFF decodes at full size: ~450 MB of RGB at this limit).
MAX_PIXELS = 150_000_000
# Cap on encoded bytes read from one source, so a stray video or disk image
# in a photo folder is rejected before it is read into memory.
MAX_BYTES = 256 * 1024 * 1024

ImageFile.LOAD_TRUNCATED_IMAGES = False

try:
    # iPhones have saved HEIC since 2017: most photos of a phone library. Pillow reads
    # AVIF itself but not HEIC.
    from pillow_heif import register_heif_opener

    register_heif_opener()
    HEIF = True
except ImportError:  # a platform without a pillow-heif wheel
    HEIF = False

Source = Union[bytes, str, os.PathLike]


# ImageError: an input that cannot be turned into pixels (errors.py).


def resolve_path(value: str, root: Union[str, os.PathLike]) -> Path:
    """A path as stored in the database: absolute, or relative to root."""
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else Path(root) / path


def read_source(source: Source) -> bytes:
    """The encoded bytes of an image given as bytes or a file path."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        path = Path(source)
        try:
            size = path.stat().st_size
            if size > MAX_BYTES:
                raise ImageError(f"file too large: {size:,} bytes (limit {MAX_BYTES:,})")
            data = path.read_bytes()
        except FileNotFoundError:
            raise ImageError(f"file not found: {path}") from None
        except IsADirectoryError:
            raise ImageError(f"is a directory, not an image: {path}") from None
        except PermissionError:
            raise ImageError(f"permission denied: {path}") from None
        except OSError as e:
            raise ImageError(f"cannot read {path}: {e.strerror or e}") from None
    if not data:
        raise ImageError("empty file (0 bytes)")
    if len(data) > MAX_BYTES:
        raise ImageError(f"image too large: {len(data):,} bytes (limit {MAX_BYTES:,})")
    return data


def open_image(data: Source, min_size: int = 0) -> Image.Image:
    """Decode image bytes (or a file: videos are read from their path) to an upright
    RGB PIL image.

    With min_size, JPEGs are decoded at a reduced scale (DCT scaling), HEIF from an
    embedded thumbnail and RAW from its embedded preview where those are large
    enough, and everything is reduced by an integer factor, keeping the shorter side
    at least min_size: a 12 MP photo needed at 256 px decodes ~8x faster.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        return _open_path(Path(data), min_size)
    data = bytes(data)
    kind = formats.sniff(data[:formats.HEAD_BYTES])
    if kind == "raw":
        from .formats.raw import open_raw

        img = open_raw(data, min_size, MAX_PIXELS, ImageError)
    elif kind == "video":
        from .formats.video import video_frame

        img = video_frame(data, MAX_PIXELS, ImageError)
    else:
        img = _open_pillow(data, min_size, kind)
    return _reduce(img, min_size)


def _open_pillow(data: bytes, min_size: int, kind: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width <= 0 or height <= 0:
                raise ImageError(f"invalid image dimensions {width}x{height}")
            if width * height > MAX_PIXELS:
                raise ImageError(
                    f"image too large: {width}x{height} pixels (limit {MAX_PIXELS:,})"
                )
            path = "decode"
            if min_size and img.format == "JPEG":
                img.draft("RGB", (min_size, min_size))
            elif img.format in ("HEIF", "AVIF"):
                from .formats import heif

                path = heif.draft(img, min_size)
            img.load()
            img = _upright(img)
            img = _to_rgb(img)
    except ImageError:
        raise
    except UnidentifiedImageError:
        if kind == "heif" and not HEIF:
            raise ImageError("HEIC/HEIF image: install pillow-heif to read it") from None
        return _last_resort(data, min_size)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"image too large (decompression bomb guard): {e}") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError,
            struct.error, MemoryError) as e:
        message = str(e) or e.__class__.__name__
        if data[:4] in (b"II*\x00", b"MM\x00*"):  # a TIFF-based RAW that Pillow misread
            try:
                return _last_resort(data, min_size)
            except ImageError:
                pass
        raise ImageError(f"corrupt or truncated image: {message}") from None
    if path == "decode":
        img.info[KIND_KEY], img.info[PATH_KEY] = "image", path
    else:
        from .formats import heif

        heif.mark(img, path)
    return img


def _last_resort(data: bytes, min_size: int) -> Image.Image:
    """Bytes no signature names and Pillow cannot open: a RAW format LibRaw knows by
    its content (there are dozens), or not an image."""
    from .formats import raw

    if data[:3] != b"\xff\xd8\xff" and raw.available():
        try:
            return raw.open_raw(data, min_size, MAX_PIXELS, ImageError)
        except ImageError:
            pass
    raise ImageError("not a recognised image format") from None


def _reduce(img: Image.Image, min_size: int) -> Image.Image:
    if min_size:
        factor = min(img.size) // min_size
        if factor >= 2:
            info = dict(img.info)
            img = img.reduce(factor)
            img.info.update(info)
    return img


def _open_path(path: Path, min_size: int) -> Image.Image:
    head = _read_head(path)
    if formats.sniff(head) == "video":
        from .formats.video import video_frame

        # Videos outgrow MAX_BYTES and need no more than a few frames: read in place.
        return _reduce(video_frame(path, MAX_PIXELS, ImageError), min_size)
    return open_image(read_source(path), min_size)


def _read_head(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            head = f.read(formats.HEAD_BYTES)
    except FileNotFoundError:
        raise ImageError(f"file not found: {path}") from None
    except IsADirectoryError:
        raise ImageError(f"is a directory, not an image: {path}") from None
    except PermissionError:
        raise ImageError(f"permission denied: {path}") from None
    except OSError as e:
        raise ImageError(f"cannot read {path}: {e.strerror or e}") from None
    if not head:
        raise ImageError("empty file (0 bytes)")
    return head


def media_kind(source: Source) -> str:
    """"image", "heif", "raw" or "video", from the first bytes alone (for badges)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        head = bytes(source[:formats.HEAD_BYTES])
    else:
        head = _read_head(Path(source))
    return formats.sniff(head)


def load_image(source: Source, min_size: int = 0) -> np.ndarray:
    """Pixels of an image (bytes or path) as an RGB uint8 array of shape (H, W, 3)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        img = open_image(read_source(source), min_size)
    else:
        img = _open_path(Path(source), min_size)
    return np.asarray(img, dtype=np.uint8)


def _upright(img: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(img)
    except Exception:
        # A broken or absurd EXIF block must not cost the user the image itself.
        return img


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # Scale high bit-depth greyscale to 8 bits instead of clipping at 255.
        pixels = np.asarray(img, dtype=np.float64)
        top = float(pixels.max()) or 1.0
        grey = np.clip(pixels * (255.0 / top), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Transparent areas become white, as viewers show them on a light page.
        img = img.convert("RGBA")
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img, mask=img.getchannel("A"))
        return background
    return img.convert("RGB")


def image_size(data: bytes) -> tuple[int, int]:
    """Width and height from the header alone, upright (EXIF orientation applied);
    for a video, of its frames."""
    kind = formats.sniff(data[:formats.HEAD_BYTES])
    if kind == "raw":
        from .formats.raw import raw_size

        return raw_size(data, ImageError)
    if kind == "video":
        from .formats.video import video_size

        return video_size(data, ImageError)
    try:
        img = Image.open(io.BytesIO(data))
        width, height = img.size
        orientation = img.getexif().get(0x0112, 1)
    except Exception:
        raise ImageError("not a recognised image format") from None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)
