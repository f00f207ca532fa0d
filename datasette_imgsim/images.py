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
import re
import signal
import stat as stat_module
import struct
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Optional, Union

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from . import formats
from .errors import ImageError
from .formats import HEIF_BRANDS, KIND_KEY, PATH_KEY  # noqa: F401 (re-exported)

# Above the largest cameras (100 MP medium format). Pillow's own guard (89.5 MP warns,
# 179 MP fails) is replaced by this one: see _open_pillow.
MAX_PIXELS = 150_000_000
# What one decode may allocate, estimated from the header before any pixel is decoded
# (decoded buffer at the size it is decoded at, a progressive JPEG's coefficients, the
# RGB copies): an image that would need more is refused. A JPEG decodes at a reduced
# scale, so only PNG, TIFF, WebP... of over ~120 MP (8-bit RGB) or ~60 MP (16-bit) meet it.
MAX_DECODE_BYTES = 512 * 1024 * 1024
# A JPEG's scans (SOS markers): a normal progressive JPEG has about 10, libjpeg-turbo's
# tools refuse more than 100; each costs a pass over every coefficient (a "scan bomb"
# repeats one thousands of times: minutes of CPU from a few hundred KB).
MAX_SCANS = 100
# ...and, since each scan of a progressive JPEG costs a pass over the whole image
# (about 2 ms per megapixel, at any draft scale), at most this many megapixel-scans:
# a 24 MP photo with its usual 10 scans is 240, the bound (a few seconds) 1,500.
MAX_SCAN_WORK = 1500
# Wall-time bound of one decode, where a timer can interrupt it (the main thread of
# an index worker or of the CLI; the server's decodes run in a killable process,
# decoding.py). Pillow feeds its decoders 64 KB at a time, so the bound is kept
# within about a second for all but a pathological single block.
DECODE_SECONDS = 30.0
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

# Set by decoding.enable() in a server process: open_image(source, min_size) done in a
# worker process the server can kill (decoding.py); None: decode here.
_delegate = None


# ImageError: an input that cannot be turned into pixels (errors.py).


def resolve_path(value: str, root: Union[str, os.PathLike]) -> Path:
    """A path as stored in the database: absolute, or relative to root."""
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else Path(root) / path


def _shown(path) -> str:
    """A path for a message: readable, and short however long the stored value."""
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = text.encode("utf-8", "replace").decode("utf-8")
    return text if len(text) <= 160 else text[:70] + "..." + text[-70:]


def read_file(path: Union[str, os.PathLike], limit: int = MAX_BYTES,
              head: Optional[int] = None) -> bytes:
    """The bytes of a regular file (at most limit; head: only its first head bytes).

    The one function through which the plugin reads an image file (indexing,
    thumbnails, re-ranking, full-size images): only regular files are read (a FIFO,
    device or socket is refused: it is opened without blocking and checked on the
    open descriptor), never more than limit bytes, a NUL byte or an unreadable name is
    an ImageError with a one-line message. Whether a path may be read at all (the
    allowed roots) is files.allowed_file's rule, asked before this.
    """
    try:
        name = os.fspath(path)
    except TypeError:
        raise ImageError(f"not a file path: {type(path).__name__}") from None
    if (b"\x00" if isinstance(name, bytes) else "\x00") in name:
        raise ImageError("the image path contains a NUL byte")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) \
        | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    try:
        before = os.stat(name)
        if stat_module.S_ISDIR(before.st_mode):
            raise IsADirectoryError
        if not stat_module.S_ISREG(before.st_mode):
            raise ImageError(f"not a regular file (a device, FIFO or socket): {_shown(path)}")
        fd = os.open(name, flags)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"file not found: {_shown(path)}") from None
    except IsADirectoryError:
        raise ImageError(f"is a directory, not an image: {_shown(path)}") from None
    except PermissionError:
        raise ImageError(f"permission denied: {_shown(path)}") from None
    except (OSError, ValueError, UnicodeError) as e:
        reason = getattr(e, "strerror", None) or e.__class__.__name__
        raise ImageError(f"cannot read {_shown(path)}: {reason}") from None
    try:
        info = os.fstat(fd)
        if not stat_module.S_ISREG(info.st_mode):  # replaced between stat and open
            raise ImageError(f"not a regular file (a device, FIFO or socket): {_shown(path)}")
        if head is None and info.st_size > limit:
            raise ImageError(f"file too large: {info.st_size:,} bytes (limit {limit:,})")
        wanted = min(info.st_size, limit) if head is None else min(head, limit)
        chunks, got = [], 0
        while got <= wanted:  # one byte more than wanted: a file that grew is noticed
            chunk = os.read(fd, min(wanted + 1 - got, 1 << 20) or 1)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
            if head is not None and got >= wanted:
                break
        data = b"".join(chunks)
    except ImageError:
        raise
    except OSError as e:
        raise ImageError(f"cannot read {_shown(path)}: {e.strerror or e}") from None
    finally:
        os.close(fd)
    if head is not None:
        return data[:head]
    if len(data) > limit:
        raise ImageError(f"file too large: over {limit:,} bytes")
    return data


def read_source(source: Source) -> bytes:
    """The encoded bytes of an image given as bytes or a file path (read_file)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        data = read_file(source)
    if not data:
        raise ImageError("empty file (0 bytes)")
    if len(data) > MAX_BYTES:
        raise ImageError(f"image too large: {len(data):,} bytes (limit {MAX_BYTES:,})")
    return data


_SOS_SEARCH = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def jpeg_scans(data: bytes) -> int:
    """How many scans (SOS segments) a JPEG has, from its markers alone.

    Segments are skipped by their lengths (an EXIF thumbnail's markers inside APP1 do
    not count); after a scan header, the entropy-coded data runs to the next marker
    (0xFF followed by anything but a stuffed 0x00 or a restart marker)."""
    n, pos, end = 0, 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            found = _SOS_SEARCH.search(data, pos)
            if found is None:
                break
            pos = found.start()
            continue
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker == 0xD9:  # EOI
            break
        if marker in (0x01, *range(0xD0, 0xD8)):
            pos += 2
            continue
        length = struct.unpack_from(">H", data, pos + 2)[0]
        pos += 2 + length
        if marker == 0xDA:
            n += 1
            if n > MAX_SCANS:
                break
            found = _SOS_SEARCH.search(data, pos)
            if found is None:
                break
            pos = found.start()
    return n


class DecodeTimeout(ImageError):
    """A decode that ran past DECODE_SECONDS."""


@contextmanager
def time_limit(seconds: Optional[float] = None):
    """Bound the wall time of the block with a timer signal (DecodeTimeout), where one
    can be used: in a process's main thread, with no other timer set. Elsewhere a no-op
    (the server's decodes are bounded by their worker process instead)."""
    seconds = DECODE_SECONDS if seconds is None else seconds
    usable = (seconds and hasattr(signal, "setitimer")
              and threading.current_thread() is threading.main_thread())
    if usable:
        try:
            usable = signal.getitimer(signal.ITIMER_REAL)[0] == 0 \
                and signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, signal.SIG_IGN, None)
        except (ValueError, OSError):
            usable = False
    if not usable:
        yield
        return
    started = time.monotonic()

    def expired(signum, frame):
        raise DecodeTimeout(f"decoding took longer than {seconds:g} s: refused "
                            f"(stopped after {time.monotonic() - started:.0f} s)")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def open_image(data: Source, min_size: int = 0) -> Image.Image:
    """Decode image bytes (or a file: videos are read from their path) to an upright
    RGB PIL image.

    With min_size, JPEGs are decoded at a reduced scale (DCT scaling), HEIF from an
    embedded thumbnail and RAW from its embedded preview where those are large
    enough, and everything is reduced by an integer factor, keeping the shorter side
    at least min_size: a 12 MP photo needed at 256 px decodes ~8x faster.
    """
    if _delegate is not None:
        return _delegate(data, min_size)
    with time_limit():
        return _open_image(data, min_size)


def _open_image(data: Source, min_size: int) -> Image.Image:
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
            # Pillow warns from 89.5 MP (and fails from 179 MP): MAX_PIXELS and
            # MAX_DECODE_BYTES below are the bounds, one rule for every image.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width <= 0 or height <= 0:
                raise ImageError(f"invalid image dimensions {width}x{height}")
            if width * height > MAX_PIXELS:
                raise ImageError(
                    f"image too large: {width}x{height} pixels (limit {MAX_PIXELS:,})"
                )
            path = "decode"
            if img.format == "JPEG":
                scans = jpeg_scans(data)
                work = scans * width * height / 1e6
                if scans > MAX_SCANS or work > MAX_SCAN_WORK:
                    raise ImageError(
                        f"JPEG refused: {f'over {MAX_SCANS}' if scans > MAX_SCANS else scans} scans "
                        f"of {width}x{height} pixels would take too long to decode (a scan "
                        f"bomb; the limits are {MAX_SCANS} scans, {MAX_SCAN_WORK:,} "
                        "megapixel-scans)")
                if min_size:
                    img.draft("RGB", (min_size, min_size))
            elif img.format in ("HEIF", "AVIF"):
                from .formats import heif

                path = heif.draft(img, min_size)
            needed = decode_bytes(img, (width, height), min_size)
            if needed > MAX_DECODE_BYTES:
                raise ImageError(
                    f"image too large to decode: {width}x{height} {img.mode} needs about "
                    f"{needed / 2**20:,.0f} MB (limit {MAX_DECODE_BYTES / 2**20:,.0f} MB)")
            with time_limit():
                img.load()
            img = _reduce(img, min_size)
            img = _upright(img)
            img = _to_rgb(img)
    except ImageError:
        raise
    except UnidentifiedImageError:
        if kind == "heif" and not HEIF:
            raise ImageError("HEIC/HEIF image: install pillow-heif to read it") from None
        return _last_resort(data, min_size)
    except Image.DecompressionBombError as e:
        raise ImageError(f"image too large (decompression bomb guard): {e}") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError,
            struct.error, MemoryError) as e:
        message = str(e) or e.__class__.__name__
        if data[:4] in (b"II*\x00", b"MM\x00*"):  # a TIFF-based RAW that Pillow misread
            try:
                return _last_resort(data, min_size)
            except ImageError:
                pass
        raise ImageError(f"corrupt or truncated image: {message[:200]}") from None
    if path == "decode":
        img.info[KIND_KEY], img.info[PATH_KEY] = "image", path
    else:
        from .formats import heif

        heif.mark(img, path)
    return img


# Bytes per pixel of Pillow's image storage, by mode (what img.load() allocates).
_STORAGE = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}


def decode_bytes(img: Image.Image, full_size: tuple[int, int], min_size: int) -> int:
    """What decoding img (opened, drafted) would allocate, from its header: the decoded
    buffer at the size it decodes at, a progressive JPEG's coefficient buffer (always at
    full size), any full-size conversion, and the RGB result."""
    width, height = img.size
    per_pixel = _STORAGE.get(img.mode, 4)
    needed = width * height * per_pixel
    if img.format == "JPEG" and (img.info.get("progressive") or img.info.get("progression")):
        layers = getattr(img, "layer", None) or [("", 1, 1, 0)] * 3
        top_h = max(layer[1] for layer in layers) or 1
        top_v = max(layer[2] for layer in layers) or 1
        share = sum(layer[1] * layer[2] for layer in layers) / (top_h * top_v)
        needed += int(full_size[0] * full_size[1] * 2 * share)  # int16 per coefficient
    factor = max(1, min(width, height) // min_size) if min_size else 1
    out_pixels = (width // factor) * (height // factor)
    if img.mode in ("P", "1", "PA"):
        needed += width * height * 4  # converted to RGB(A) before it can be reduced
    return needed + 2 * out_pixels * 4  # oriented, converted


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
    """An integer-factor reduction keeping the shorter side at least min_size, done
    first, at the decoded mode (16-bit and float images too), so that later steps
    work on the small image."""
    if min_size:
        factor = min(img.size) // min_size
        if factor >= 2:
            info = dict(img.info)
            if img.mode in ("P", "1", "PA"):
                img = _to_rgb(img)  # a palette cannot be averaged
            if img.mode.startswith("I;16"):
                img = img.resize((max(1, img.width // factor), max(1, img.height // factor)),
                                 Image.BOX)
            else:
                img = img.reduce(factor)
            img.info.update(info)
    return img


def _open_path(path: Path, min_size: int) -> Image.Image:
    head = _read_head(path)
    if formats.sniff(head) == "video":
        from .formats.video import video_frame

        # Videos outgrow MAX_BYTES and need no more than a few frames: read in place.
        return _reduce(video_frame(path, MAX_PIXELS, ImageError), min_size)
    return _open_image(read_source(path), min_size)


def _read_head(path: Path) -> bytes:
    head = read_file(path, head=formats.HEAD_BYTES)
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
        source = read_source(source)
    return np.asarray(open_image(source, min_size), dtype=np.uint8)


def _upright(img: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(img)
    except Exception:
        # A broken or absurd EXIF block must not cost the user the image itself.
        return img


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        # Scale high bit-depth greyscale to 8 bits instead of clipping at 255, in
        # Pillow at the image's (already reduced) size: no full-size float64 copy.
        low, top = img.getextrema()
        top = float(top) if top == top and top not in (float("inf"), float("-inf")) else 1.0
        scale = 255.0 / top if top > 0 else 1.0
        if img.mode != "F":
            img = img.convert("I")
        grey = img.point(lambda value: value * scale).convert("L")
        return grey.convert("RGB")
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
