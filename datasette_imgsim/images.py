"""The one place images are read: open, guard, reduced decode, orient, to RGB."""
from __future__ import annotations

import io
import os
import struct
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .errors import ImageError

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

# ISO base media brands of HEIF images, to name the format when it cannot be read.
HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}

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


def open_image(data: bytes, min_size: int = 0) -> Image.Image:
    """Decode image bytes to an upright RGB PIL image.

    With min_size, JPEGs are decoded at a reduced scale (DCT scaling) and
    everything else is reduced by an integer factor, keeping the shorter side
    at least min_size: a 12 MP photo needed at 256 px decodes ~8x faster.
    """
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
            if min_size and img.format == "JPEG":
                img.draft("RGB", (min_size, min_size))
            img.load()
            img = _upright(img)
            img = _to_rgb(img)
            if min_size:
                factor = min(img.size) // min_size
                if factor >= 2:
                    img = img.reduce(factor)
            return img
    except ImageError:
        raise
    except UnidentifiedImageError:
        if data[4:8] == b"ftyp" and data[8:12] in HEIF_BRANDS and not HEIF:
            raise ImageError("HEIC/HEIF image: install pillow-heif to read it") from None
        raise ImageError("not a recognised image format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"image too large (decompression bomb guard): {e}") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError,
            struct.error, MemoryError) as e:
        message = str(e) or e.__class__.__name__
        raise ImageError(f"corrupt or truncated image: {message}") from None


def load_image(source: Source, min_size: int = 0) -> np.ndarray:
    """Pixels of an image (bytes or path) as an RGB uint8 array of shape (H, W, 3)."""
    img = open_image(read_source(source), min_size)
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
    """Width and height from the header alone, upright (EXIF orientation applied)."""
    try:
        img = Image.open(io.BytesIO(data))
        width, height = img.size
        orientation = img.getexif().get(0x0112, 1)
    except Exception:
        raise ImageError("not a recognised image format") from None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)
