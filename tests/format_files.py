"""Test files in the formats a photo library holds, built here (nothing downloaded).

DNG: a real photo mosaicked into an RGGB Bayer pattern and written with pidng, which
writes the raw IFD only; a JPEG preview is added as a second IFD (NewSubfileType 1,
compression 7, as DNG previews are stored), where LibRaw finds it. HEIC: pillow-heif's
encoder, with thumbnails. Videos: OpenCV's VideoWriter.
"""
from __future__ import annotations

import io
import struct
from typing import Optional, Sequence

import numpy as np
from PIL import Image

# EXIF orientation -> how the upright picture is stored (np.rot90 turns counter-clockwise).
STORED = {1: lambda p: p, 3: lambda p: np.rot90(p, 2), 6: lambda p: np.rot90(p, 1),
          8: lambda p: np.rot90(p, -1)}
# XYZ (D65) -> linear sRGB: the "camera" of these DNGs sees linear sRGB.
XYZ_TO_SRGB = [3.2406, -1.5372, -0.4986, -0.9689, 1.8758, 0.0415, 0.0557, -0.2040, 1.0570]


def jpeg(pixels: np.ndarray, quality: int = 90, **save) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(out, "JPEG", quality=quality, **save)
    return out.getvalue()


def mosaic(rgb: np.ndarray, bits: int = 12) -> np.ndarray:
    """An RGGB Bayer frame of linear light, as a sensor would record the photo."""
    white = (1 << bits) - 1
    h, w = rgb.shape[0] // 2 * 2, rgb.shape[1] // 2 * 2
    lin = (rgb[:h, :w].astype(np.float64) / 255.0) ** 2.2 * white
    bayer = np.empty((h, w), np.uint16)
    bayer[0::2, 0::2] = lin[0::2, 0::2, 0]
    bayer[0::2, 1::2] = lin[0::2, 1::2, 1]
    bayer[1::2, 0::2] = lin[1::2, 0::2, 1]
    bayer[1::2, 1::2] = lin[1::2, 1::2, 2]
    return bayer


def dng_bytes(upright: np.ndarray, orientation: int = 1, preview: Optional[int] = None,
              bits: int = 12, preview_data: Optional[bytes] = None) -> bytes:
    """A DNG of the photo upright, its sensor data stored as EXIF orientation says.

    preview: the longer side of an embedded JPEG preview (0: full size; None: none);
    preview_data: bytes to embed as the preview instead (e.g. corrupt ones).
    """
    from pidng.core import RAW2DNG, DNGTags, Tag
    from pidng.defs import CalibrationIlluminant, CFAPattern, DNGVersion, PhotometricInterpretation

    stored = np.ascontiguousarray(STORED[orientation](upright))
    bayer = mosaic(stored, bits)
    h, w = bayer.shape
    t = DNGTags()
    for tag, value in [
        (Tag.ImageWidth, w), (Tag.ImageLength, h), (Tag.TileWidth, w), (Tag.TileLength, h),
        (Tag.Orientation, orientation), (Tag.SamplesPerPixel, 1), (Tag.BitsPerSample, bits),
        (Tag.PhotometricInterpretation, PhotometricInterpretation.Color_Filter_Array),
        (Tag.CFARepeatPatternDim, [2, 2]), (Tag.CFAPattern, CFAPattern.RGGB),
        (Tag.BlackLevel, 0), (Tag.WhiteLevel, (1 << bits) - 1),
        (Tag.ColorMatrix1, [[int(round(v * 10000)), 10000] for v in XYZ_TO_SRGB]),
        (Tag.CalibrationIlluminant1, CalibrationIlluminant.D65),
        (Tag.AsShotNeutral, [[1, 1], [1, 1], [1, 1]]), (Tag.BaselineExposure, [[0, 1]]),
        (Tag.Make, "PiDNG"), (Tag.Model, "imgsim test"), (Tag.UniqueCameraModel, "imgsim test"),
        (Tag.DNGVersion, DNGVersion.V1_4), (Tag.DNGBackwardVersion, DNGVersion.V1_2),
    ]:
        t.set(tag, value)
    writer = RAW2DNG()
    writer.options(t, path="", compress=False)
    data = bytes(writer.convert(bayer))
    if preview_data is None and preview is not None:
        img = Image.fromarray(stored)
        if preview:
            img.thumbnail((preview, preview))
        preview_data = jpeg(np.asarray(img))
    if preview_data is not None:
        size = Image.open(io.BytesIO(preview_data)).size if preview_data[:2] == b"\xff\xd8" and \
            _opens(preview_data) else (w, h)
        data = add_preview(data, preview_data, size)
    return data


def _opens(data: bytes) -> bool:
    try:
        Image.open(io.BytesIO(data))
        return True
    except Exception:
        return False


def add_preview(dng: bytes, preview: bytes, size: tuple[int, int]) -> bytes:
    """The DNG with a JPEG preview IFD chained after its first IFD."""
    out = bytearray(dng)
    ifd0 = struct.unpack_from("<I", out, 4)[0]
    next_at = ifd0 + 2 + 12 * struct.unpack_from("<H", out, ifd0)[0]
    while len(out) % 4:
        out.append(0)
    at = len(out)
    tags = [(254, 4, 1, 1), (256, 4, 1, size[0]), (257, 4, 1, size[1]), (258, 3, 3, None),
            (259, 3, 1, 7), (262, 3, 1, 6), (273, 4, 1, None), (277, 3, 1, 3),
            (279, 4, 1, len(preview)), (50970, 4, 1, 2)]
    bps_at = at + 2 + 12 * len(tags) + 4
    data_at = bps_at + 8
    body = struct.pack("<H", len(tags))
    for tag, kind, count, value in tags:
        value = {258: bps_at, 273: data_at}.get(tag, value)
        body += struct.pack("<HHIHH" if kind == 3 and count == 1 else "<HHII", tag, kind, count,
                            *((value, 0) if kind == 3 and count == 1 else (value,)))
    body += struct.pack("<I", 0) + struct.pack("<4H", 8, 8, 8, 0) + preview
    struct.pack_into("<I", out, next_at, at)
    return bytes(out + body)


def heic_bytes(upright: np.ndarray, thumbnails: Sequence[int] = (), orientation: int = 1,
               quality: int = 85) -> bytes:
    """A HEIC file (x265's fastest preset), its pixels stored as orientation says
    (libheif writes irot/imir from the EXIF orientation)."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    img = Image.fromarray(np.ascontiguousarray(STORED[orientation](upright)))
    save = {}
    if orientation != 1:
        exif = Image.Exif()
        exif[0x0112] = orientation
        save["exif"] = exif.tobytes()
    out = io.BytesIO()
    img.save(out, "HEIF", quality=quality, thumbnails=list(thumbnails),
             enc_params={"preset": "ultrafast"}, **save)
    return out.getvalue()


def heif_items(data: bytes) -> tuple[dict, list]:
    """{item_id: [(offset, length), ...]} from iloc, and [(thumbnail, master)] from iref."""
    meta = _box(data, 0, len(data), b"meta")
    start, end = meta[0] + 4, meta[1]  # meta is a FullBox
    iloc, iref = _box(data, start, end, b"iloc"), _box(data, start, end, b"iref")
    pos, version = iloc[0] + 4, data[iloc[0]]
    sizes = data[pos] >> 4, data[pos] & 15, data[pos + 1] >> 4, data[pos + 1] & 15
    off_size, len_size, base_size, index_size = sizes
    pos += 2

    def read(n):
        nonlocal pos
        value = int.from_bytes(data[pos:pos + n], "big") if n else 0
        pos += n
        return value

    locations = {}
    for _ in range(read(2 if version < 2 else 4)):
        item = read(2 if version < 2 else 4)
        if version:
            read(2)  # construction method
        read(2)
        base = read(base_size)
        extents = []
        for _ in range(read(2)):
            if version and index_size:
                read(index_size)
            extents.append((base + read(off_size), read(len_size)))
        locations[item] = extents
    thumbs = []
    pos, ref_version = iref[0] + 4, data[iref[0]]
    while pos < iref[1]:
        size, kind = struct.unpack_from(">I4s", data, pos)
        end, pos = pos + size, pos + 8
        width = 2 if ref_version == 0 else 4
        source = read(width)
        targets = [read(width) for _ in range(read(2))]
        if kind == b"thmb":
            thumbs += [(source, t) for t in targets]
        pos = end
    return locations, thumbs


def _box(data: bytes, start: int, end: int, kind: bytes) -> tuple[int, int]:
    pos = start
    while pos + 8 <= end:
        size, name = struct.unpack_from(">I4s", data, pos)
        if name == kind:
            return pos + 8, pos + size
        pos += size if size else end - pos
    raise ValueError(f"no {kind!r} box")


def break_heic_thumbnail(data: bytes) -> bytes:
    """The HEIC with the coded data of its thumbnails overwritten with garbage."""
    locations, thumbs = heif_items(data)
    out = bytearray(data)
    rng = np.random.default_rng(0)
    for thumb, _ in thumbs:
        for offset, length in locations[thumb]:
            out[offset:offset + length] = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
    return bytes(out)


def video_file(path, segments: Sequence[tuple[np.ndarray, int]], fps: float = 10,
               fourcc: str = "mp4v", size: Optional[tuple[int, int]] = None) -> None:
    """A video of segments (frame pixels RGB, number of frames), each frame drifting a
    pixel so the encoder codes motion."""
    import cv2

    first = segments[0][0]
    size = size or (first.shape[1] // 2 * 2, first.shape[0] // 2 * 2)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    assert writer.isOpened(), f"no {fourcc} encoder"
    for pixels, count in segments:
        frame = cv2.resize(np.ascontiguousarray(pixels[..., ::-1]), (size[0] + 16, size[1]))
        for i in range(count):
            writer.write(np.ascontiguousarray(frame[:, i % 16:i % 16 + size[0]]))
    writer.release()


def rotate_mp4(data: bytes) -> bytes:
    """An MP4 whose track says "turn 90 degrees clockwise to show" (the display matrix
    of its tkhd box), as phones record portrait videos."""
    out = bytearray(data)
    at = out.find(b"tkhd")
    version = out[at + 4]
    matrix = at + 8 + (20 if version == 0 else 32) + 16
    struct.pack_into(">9i", out, matrix, 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)
    return bytes(out)
