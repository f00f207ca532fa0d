import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from datasette_imgsim.images import ImageError, load_image, open_image, read_source

from .helpers import heic_bytes, jpeg_bytes


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **kw)
    return out.getvalue()


def test_exif_orientation_is_applied(photos):
    pixels = photos["rocket"]  # portrait: taller than wide
    landscape = Image.fromarray(np.ascontiguousarray(np.rot90(pixels, 1)))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated; viewers turn it 90 degrees clockwise
    data = encode(landscape, "JPEG", exif=exif.tobytes())
    loaded = load_image(data)
    assert loaded.shape[:2] == pixels.shape[:2]
    assert np.abs(loaded.astype(int) - pixels.astype(int)).mean() < 12


def test_absurd_exif_orientation_is_ignored(photos):
    exif = Image.Exif()
    exif[0x0112] = 999
    data = encode(Image.fromarray(photos["coffee"]), "JPEG", exif=exif.tobytes())
    assert load_image(data).shape == photos["coffee"].shape


@pytest.mark.parametrize("mode", ["CMYK", "L", "P", "I;16", "LA", "RGBA"])
def test_modes_become_rgb(photos, mode):
    img = Image.fromarray(photos["coffee"])
    if mode == "I;16":
        grey = np.asarray(img.convert("L"), dtype=np.uint16) * 200
        img = Image.fromarray(grey)
        assert img.mode == "I;16"
        fmt = "PNG"
    else:
        img = img.convert(mode)
        fmt = "TIFF" if mode == "CMYK" else "PNG"
    pixels = load_image(encode(img, fmt))
    assert pixels.dtype == np.uint8 and pixels.shape == photos["coffee"].shape
    # 16-bit values are scaled to 8 bits, not clipped to white.
    assert 30 < pixels.mean() < 220


def test_palette_transparency_becomes_white():
    img = Image.new("P", (20, 20), 0)
    img.putpalette([0, 0, 0] + [255, 0, 0] * 255)
    img.info["transparency"] = 0
    pixels = load_image(encode(img, "PNG", transparency=0))
    assert (pixels == 255).all()


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (32, 32), colour) for colour in [(255, 0, 0), (0, 0, 255)]]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:])
    pixels = load_image(out.getvalue())
    assert pixels[..., 0].mean() > 200 and pixels[..., 2].mean() < 50


def test_reduced_decode_keeps_shorter_side(photos):
    big = np.asarray(Image.fromarray(photos["astronaut"]).resize((4000, 3000)))
    data = jpeg_bytes(big)
    img = open_image(data, min_size=224)
    assert 224 <= min(img.size) < 3000 // 4
    assert max(img.size) / min(img.size) == pytest.approx(4 / 3, rel=0.02)


def png_header_only(width, height) -> bytes:
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"hello, I am a text file\n", "not a recognised image"),
        (bytes(range(256)) * 40, "not a recognised image"),
        (png_header_only(30000, 30000), "too large"),
        (png_header_only(1, 1), "corrupt or truncated"),
    ],
)
def test_bad_inputs_raise_readable_errors(data, message):
    with pytest.raises(ImageError, match=message):
        load_image(data)


def test_truncated_jpeg(photos):
    data = jpeg_bytes(photos["coffee"])
    with pytest.raises(ImageError, match="truncated"):
        load_image(data[: len(data) // 2])


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageError, match="file not found"):
        read_source(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="directory"):
        read_source(tmp_path)


def test_heic_photos_are_read(photos):
    data = heic_bytes(photos["chelsea"])
    assert data[4:12] == b"ftypheic"
    pixels = load_image(data)
    assert pixels.shape == photos["chelsea"].shape
    assert np.abs(pixels.astype(int) - photos["chelsea"]).mean() < 4


def test_heic_without_pillow_heif_says_what_to_install(photos, monkeypatch):
    from datasette_imgsim import images

    def unidentified(*args, **kwargs):
        raise images.UnidentifiedImageError("cannot identify image file")

    monkeypatch.setattr(images, "HEIF", False)
    monkeypatch.setattr(images.Image, "open", unidentified)
    with pytest.raises(ImageError, match="install pillow-heif"):
        load_image(heic_bytes(photos["coffee"]))
    with pytest.raises(ImageError, match="not a recognised image format"):
        load_image(jpeg_bytes(photos["coffee"]))
