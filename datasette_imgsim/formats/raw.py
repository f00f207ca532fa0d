"""Camera RAW through LibRaw (rawpy): the embedded JPEG preview where it is large
enough, else LibRaw's half-size demosaic.

Most cameras embed a full-size or 1620 px JPEG preview, which decodes at JPEG speed
with the same reduced (DCT-scaled) decode as any JPEG; a half-size demosaic of a
24 MP sensor costs ~10x more. The preview is stored as the sensor sees the scene, so
the RAW's orientation is applied to it (unless the preview is upright already).
"""
from __future__ import annotations

import io
import warnings

from PIL import Image

from . import KIND_KEY, PATH_KEY, record

# LibRaw's flip code -> EXIF orientation (dcraw's "12435867" table, inverted).
FLIP_TO_ORIENTATION = {0: 1, 1: 2, 2: 4, 3: 3, 4: 5, 5: 8, 6: 6, 7: 7}
TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
             4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
             6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
             8: Image.Transpose.ROTATE_90}


def available() -> bool:
    try:
        import rawpy  # noqa: F401
    except ImportError:
        return False
    return True


def open_raw(data: bytes, min_size: int, max_pixels: int, error: type) -> Image.Image:
    """An upright RGB image of a camera RAW file; raises error (ImageError) with a
    one-line message for anything LibRaw cannot read."""
    try:
        import rawpy
    except ImportError:
        raise error("camera RAW file: install rawpy to read it") from None
    try:
        raw = rawpy.imread(io.BytesIO(data))
    except rawpy.LibRawFileUnsupportedError:
        raise error("RAW file LibRaw cannot read: an unsupported camera, or a truncated header") from None
    except (rawpy.LibRawError, OSError, ValueError) as e:
        raise error(f"corrupt or truncated RAW file: {_message(e)}") from None
    with raw:
        sizes = raw.sizes
        width, height = sizes.width, sizes.height
        if width <= 0 or height <= 0:
            raise error(f"invalid RAW dimensions {width}x{height}")
        if sizes.raw_width * sizes.raw_height > max_pixels:
            raise error(f"RAW too large: {sizes.raw_width}x{sizes.raw_height} pixels "
                        f"(limit {max_pixels:,})")
        # Without a size to meet, the preview must match what the demosaic would give.
        needed = min_size or min(width, height) // 2
        img = _preview(raw, needed, min_size, max_pixels,
                       FLIP_TO_ORIENTATION.get(sizes.flip, 1), (width, height))
        if img is not None:
            path = "preview"
        else:
            img = _demosaic(raw, error)
            path = "demosaic"
    record("raw", path)
    img.info[KIND_KEY], img.info[PATH_KEY] = "raw", path
    return img


def _preview(raw, needed: int, min_size: int, max_pixels: int, orientation: int, sensor: tuple):
    """The embedded JPEG preview, upright, if there is one at least needed pixels on its
    shorter side that decodes cleanly (reduced to min_size); else None (the caller
    demosaics)."""
    import rawpy

    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawError, OSError, ValueError):
        return None  # no preview, or one LibRaw cannot unpack
    if thumb.format != rawpy.ThumbFormat.JPEG:
        return None  # a bitmap thumbnail: small, and not worth a special path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(thumb.data))
            if img.format != "JPEG" or min(img.size) < needed or img.width * img.height > max_pixels:
                return None
            if min_size:
                img.draft("RGB", (min_size, min_size))
            own = img.getexif().get(0x0112, 1)
            img.load()
        img = img.convert("RGB") if img.mode != "RGB" else img
    except Exception:  # a corrupt preview: the demosaic still has the sensor data
        return None
    # LibRaw writes the RAW's orientation into previews without EXIF of their own;
    # a preview's own EXIF speaks for its own pixels.
    orientation = own if own in TRANSPOSE else orientation
    img.info = {}  # its EXIF (orientation included) is spent here
    if orientation in (5, 6, 7, 8) and (img.width > img.height) != (sensor[0] > sensor[1]):
        return img  # stored upright already (its aspect is the turned sensor's)
    img = img.transpose(TRANSPOSE[orientation]) if orientation in TRANSPOSE else img
    return img


def _demosaic(raw, error: type) -> Image.Image:
    import numpy as np
    import rawpy

    try:
        rgb = raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8)
    except (rawpy.LibRawError, OSError, ValueError, MemoryError) as e:
        raise error(f"corrupt or truncated RAW file: {_message(e)}") from None
    return Image.fromarray(np.ascontiguousarray(rgb), "RGB")


def raw_size(data: bytes, error: type) -> tuple[int, int]:
    """Upright width and height of a RAW file from its header."""
    try:
        import rawpy

        with rawpy.imread(io.BytesIO(data)) as raw:
            s = raw.sizes
            return (s.height, s.width) if s.flip & 4 else (s.width, s.height)
    except Exception:
        raise error("not a recognised image format") from None


def _message(e: Exception) -> str:
    import rawpy

    if isinstance(e, rawpy.LibRawIOError):
        return "the data ends early or cannot be read"
    text = e.args[0] if e.args else ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return str(text or e.__class__.__name__).strip().splitlines()[0]
