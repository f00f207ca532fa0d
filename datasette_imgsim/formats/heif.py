"""HEIC / HEIF / AVIF: decode the embedded thumbnail when it is large enough.

iPhones embed a 320 px thumbnail, other encoders often 512 px or more. pillow-heif
(1.8+) picks, through ``Image.draft``, the smallest thumbnail that is a scaled copy of
the image (same aspect, crop, rotation and mirroring, colour profile) and at least the
requested size on both sides, skipping thumbnails that fail to decode; libheif applies
irot/imir to the thumbnail as to the image, and pillow-heif resets the EXIF orientation
so it is not applied twice. Copy detection over 20 photos (bench/formats_speed.py)
found no change in recall for any method from the thumbnail path, so it is on for all.
"""
from __future__ import annotations

from PIL import Image

from . import KIND_KEY, PATH_KEY, record

# Shorter sides at which the thumbnail path is used; None: always when large enough.
# Set to a number to keep methods that need more than it on the full decode.
THUMBNAIL_MAX_MIN_SIZE = None


def draft(img: Image.Image, min_size: int) -> str:
    """Switch an opened (not loaded) HEIF image to a thumbnail when one fits;
    returns the decode path, "thumbnail" or "full"."""
    if not min_size or (THUMBNAIL_MAX_MIN_SIZE is not None and min_size > THUMBNAIL_MAX_MIN_SIZE):
        return "full"
    try:
        chosen = img.draft("RGB", (min_size, min_size))
    except Exception:  # an older pillow-heif, or a thumbnail it cannot parse
        return "full"
    return "thumbnail" if chosen else "full"


def mark(img: Image.Image, path: str) -> None:
    record("heif", path)
    img.info[KIND_KEY], img.info[PATH_KEY] = "heif", path
