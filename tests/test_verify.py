"""Pair verification on real photos: each copy family named, look-alike shots kept apart."""
from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from datasette_imgsim.verify import Verdict, needs_geometry, prepare, settle, verify_pair

from .conftest import jpeg_bytes, photo


def decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def jpeg(pixels, quality=90):
    return decoded(jpeg_bytes(np.ascontiguousarray(pixels), quality))


def crop(pixels, area, at=(0.5, 0.5)):
    h, w = pixels.shape[:2]
    ch, cw = int(h * np.sqrt(area)), int(w * np.sqrt(area))
    y, x = int((h - ch) * at[1]), int((w - cw) * at[0])
    return pixels[y:y + ch, x:x + cw]


def caption(pixels):
    img = Image.fromarray(pixels).copy()
    w, h = img.size
    draw = ImageDraw.Draw(img, "RGBA")
    draw.rectangle([0, int(h * 0.85), w, h], fill=(20, 20, 20, 220))
    draw.text((int(w * 0.05), int(h * 0.9)), "SHARED via photos app", fill=(255, 255, 255, 255))
    draw.ellipse([w - 60, 8, w - 8, 60], fill=(230, 40, 40, 230))
    return np.asarray(img)


def bordered(pixels, width=40, colour=255):
    h, w = pixels.shape[:2]
    out = np.full((h + 2 * width, w + 2 * width, 3), colour, np.uint8)
    out[width:width + h, width:width + w] = pixels
    return out


def window(pixels, x0, width=0.7, zoom=1.0):
    h, w = pixels.shape[:2]
    cw, ch = int(w * width * zoom), int(h * zoom)
    y0 = (h - ch) // 2
    return cv2.resize(np.ascontiguousarray(pixels[y0:y0 + ch, x0:x0 + cw]),
                      (int(w * width), h), interpolation=cv2.INTER_AREA)


def exposure(pixels, ev):
    linear = (pixels / 255.0) ** 2.2 * 2.0 ** ev
    return np.clip(linear ** (1 / 2.2) * 255, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def chelsea():
    return photo("chelsea")


@pytest.fixture(scope="module")
def coffee():
    return photo("coffee")


@pytest.fixture(scope="module")
def original(chelsea):
    return prepare(jpeg(chelsea))


@pytest.mark.parametrize("name,make,kind,source", [
    ("jpeg q20", lambda p: jpeg(p, 20), "same picture", None),
    ("resize 25%", lambda p: jpeg(cv2.resize(p, (p.shape[1] // 4, p.shape[0] // 4),
                                             interpolation=cv2.INTER_AREA)), "same picture", "a"),
    ("blur", lambda p: jpeg(np.asarray(Image.fromarray(p).filter(ImageFilter.GaussianBlur(3)))),
     "same picture", "a"),
    ("crop 64%", lambda p: jpeg(crop(p, 0.64)), "crop", "a"),
    ("crop 80% off-centre", lambda p: jpeg(crop(p, 0.8, (0.2, 0.7))), "crop", "a"),
    ("greyscale", lambda p: jpeg(np.asarray(Image.fromarray(p).convert("L").convert("RGB"))),
     "greyscale copy", "a"),
    ("mirror", lambda p: jpeg(p[:, ::-1]), "mirror image", None),
    ("caption overlay", lambda p: jpeg(caption(p)), "overlay", "a"),
    ("bordered", lambda p: jpeg(bordered(p)), "screenshot/border", "a"),
])
def test_copy_families(chelsea, original, name, make, kind, source):
    verdict = verify_pair(original, make(chelsea))
    assert verdict.is_copy, (name, verdict)
    assert verdict.kind == kind, (name, verdict)
    assert verdict.which_is_source == source, (name, verdict)
    assert verdict.reason


def test_reasons_in_words(chelsea, original):
    assert verify_pair(original, jpeg(crop(chelsea, 0.64))).reason == "crop of 64 % of the original"
    assert verify_pair(original, jpeg(chelsea, 20)).reason == "same picture, re-encoded"
    assert "resized to 25 %" in verify_pair(
        original, jpeg(cv2.resize(chelsea, (chelsea.shape[1] // 4, chelsea.shape[0] // 4)))).reason


def test_source_is_found_from_either_side(chelsea, original):
    verdict = verify_pair(jpeg(crop(chelsea, 0.64)), original)
    assert (verdict.kind, verdict.which_is_source) == ("crop", "b")


def test_screenshot_in_a_window(coffee):
    h, w = coffee.shape[:2]
    img = Image.new("RGB", (int(w * 1.6), int(h * 1.1)), (40, 40, 44))
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, 0, img.width, 28], fill=(225, 225, 225))
    draw.text((10, 8), "coffee.jpg - Image Viewer", fill=(0, 0, 0))
    img.paste(Image.fromarray(coffee).resize((int(w * 0.9), int(h * 0.9))), (int(w * 0.4), 40))
    out = io.BytesIO()
    img.save(out, "PNG")
    verdict = verify_pair(jpeg(coffee), decoded(out.getvalue()))
    assert verdict.is_copy
    assert (verdict.kind, verdict.which_is_source) == ("screenshot/border", "a")


@pytest.mark.parametrize("name,frames", [
    ("burst frame", lambda p: (window(p, 0), window(p, int(p.shape[1] * 0.05), zoom=0.97))),
    ("bracket +1 EV", lambda p: (window(p, 0), exposure(window(p, 2), 1))),
    ("bracket -1 EV", lambda p: (window(p, 0), exposure(window(p, 2), -1))),
    ("panned frame", lambda p: (window(p, 0), window(p, int(p.shape[1] * 0.25)))),
])
@pytest.mark.parametrize("name_photo", ["chelsea", "coffee"])
def test_look_alikes_are_similar_shots(name, frames, name_photo):
    first, second = frames(photo(name_photo))
    verdict = verify_pair(jpeg(first), jpeg(second))
    assert not verdict.is_copy, (name, verdict)
    assert verdict.kind == "similar shot", (name, verdict)


def test_panned_frame_reports_overlap(chelsea):
    w = chelsea.shape[1]
    verdict = verify_pair(jpeg(chelsea[:, :int(w * 0.65)]), jpeg(chelsea[:, int(w * 0.35):]))
    assert verdict.kind == "similar shot"
    assert 0.25 < verdict.overlap < 0.35
    assert verdict.reason == f"similar shot: {100 * verdict.overlap:.0f} % overlap"


def test_unrelated_pictures_are_not_copies(chelsea, coffee):
    assert not verify_pair(jpeg(chelsea), jpeg(coffee)).is_copy


def test_settle_decides_plain_re_encodes_without_geometry(chelsea, coffee):
    a = prepare(jpeg(chelsea), features=False)
    verdict = settle(a, prepare(jpeg(chelsea, 30), features=False))
    assert isinstance(verdict, Verdict) and verdict.is_copy and verdict.stage == "cheap"
    # A crop, a mirror image or a look-alike needs geometry.
    assert needs_geometry(a, prepare(jpeg(crop(chelsea, 0.64)), features=False))
    assert needs_geometry(a, prepare(jpeg(chelsea[:, ::-1]), features=False))
    assert needs_geometry(a, prepare(jpeg(exposure(chelsea, 1)), features=False))
    assert settle(a, prepare(jpeg(coffee), features=False)) in (None,) or not settle(
        a, prepare(jpeg(coffee), features=False)).is_copy


def test_facts_give_the_full_size(chelsea, original):
    small = jpeg(chelsea)
    verdict = verify_pair(original, small, {"width": 4000, "height": 2660},
                          {"width": 1000, "height": 665})
    assert verdict.which_is_source == "a"
    assert "resized to 25 %" in verdict.reason


def test_swapped_exchanges_a_and_b(chelsea, original):
    verdict = verify_pair(original, jpeg(crop(chelsea, 0.64)))
    back = verdict.swapped()
    assert (back.kind, back.which_is_source, back.reason) == ("crop", "b", verdict.reason)


@pytest.mark.parametrize("captioned_first", [False, True])
def test_caption_over_a_smooth_picture_is_the_edited_side(captioned_first):
    """A translucent caption over a smooth wall (scikit-image's clock): the wall under
    the banner is flatter than the banner itself, yet the banner, its text and the
    logo are what the captioned side has and the plain one lacks."""
    clock = photo("clock")
    plain, captioned = prepare(jpeg(clock)), prepare(jpeg(caption(clock)))
    pair, edited = ((captioned, plain), "a") if captioned_first else ((plain, captioned), "b")
    verdict = verify_pair(*pair)
    assert verdict.is_copy and verdict.kind == "overlay", verdict
    assert verdict.edited == edited, verdict
    assert verdict.which_is_source == {"a": "b", "b": "a"}[edited], verdict
