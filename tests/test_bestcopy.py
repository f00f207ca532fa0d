"""Best-copy choice and JPEG quality estimates, on real photos."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from datasette_imgsim.bestcopy import (Facts, apply_verdicts, choose_best, describe,
                                       facts_of, jpeg_quality)
from datasette_imgsim.verify import verify_pair

from .conftest import jpeg_bytes, photo


def decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.mark.parametrize("quality", [20, 50, 75, 90, 95])
@pytest.mark.parametrize("subsampling", [0, 2])
def test_jpeg_quality_from_quantisation_tables(quality, subsampling):
    data = jpeg_bytes(photo("coffee"), quality, subsampling=subsampling)
    assert abs(jpeg_quality(data) - quality) <= 3


def test_jpeg_quality_of_other_formats_is_none():
    out = io.BytesIO()
    Image.fromarray(photo("coffee")).save(out, "PNG")
    assert jpeg_quality(out.getvalue()) is None
    assert jpeg_quality(b"not an image") is None


def test_facts_of_reads_exif_date_and_raw_extension():
    img = Image.fromarray(photo("chelsea"))
    exif = Image.Exif()
    exif[0x0110] = "Camera"
    exif.get_ifd(0x8769)[0x9003] = "2019:07:14 10:21:00"
    out = io.BytesIO()
    img.save(out, "JPEG", quality=88, exif=exif)
    facts = facts_of(out.getvalue(), "IMG_0001.jpg")
    assert (facts.width, facts.height, facts.format) == (451, 300, "JPEG")
    assert facts.jpeg_quality == 88 and facts.taken_at == "2019:07:14 10:21:00"
    assert facts.exif_count >= 2 and not facts.is_raw
    assert facts_of(b"", "DSC_0001.NEF").is_raw


def _group(files: list[bytes]) -> tuple[list[Facts], dict]:
    members = [facts_of(data) for data in files]
    pixels = [decoded(data) for data in files]
    verdicts = {}
    for i in range(len(files)):
        for j in range(i + 1, len(files)):
            verdicts[(i, j)] = verify_pair(pixels[i], pixels[j], members[i], members[j])
    return apply_verdicts(members, verdicts), verdicts


def _padded(pixels, quality=90, extra=400) -> bytes:
    """A JPEG a few hundred bytes larger than a plain save (a comment block)."""
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(out, "JPEG", quality=quality,
                                                       comment=b"x" * extra)
    return out.getvalue()


@pytest.fixture(scope="module")
def family():
    p = photo("chelsea")
    h, w = p.shape[:2]
    return {
        "mirror": _padded(p[:, ::-1]),
        "crop": jpeg_bytes(np.ascontiguousarray(p[int(h * 0.1):int(h * 0.9),
                                                  int(w * 0.1):int(w * 0.9)])),
        "grey": jpeg_bytes(np.asarray(Image.fromarray(p).convert("L").convert("RGB"))),
        "q30": jpeg_bytes(p, 30),
        "original": jpeg_bytes(p, 90),
    }


def test_original_chosen_over_its_copies(family):
    names = list(family)
    assert len(family["mirror"]) > len(family["original"])  # larger file, yet not best
    members, _ = _group(list(family.values()))
    best, reason = choose_best(members)
    assert names[best] == "original", (names[best], reason, members)
    labels = dict(zip(names, describe(members, best)))
    assert labels["original"] == "best copy"
    assert labels["crop"] == "crop" and labels["grey"] == "greyscale copy"
    assert members[names.index("mirror")].is_mirrored


@pytest.mark.parametrize("other,words", [
    ("crop", "uncropped original"),
    ("grey", "colour original"),
    ("q30", "highest JPEG quality (q90 vs q30)"),
])
def test_original_over_each_copy_alone(family, other, words):
    for order in ((other, "original"), ("original", other)):
        members, _ = _group([family[n] for n in order])
        best, reason = choose_best(members)
        assert order[best] == "original", (order, reason)
        assert words in reason


def test_rules_in_order():
    big = Facts(width=4000, height=3000, jpeg_quality=80)
    crop = Facts(width=4000, height=3000, jpeg_quality=95, derived_from={0}, how={0: "crop"})
    assert choose_best([big, crop]) == (0, "largest, uncropped original (the others are: crop)")
    assert choose_best([Facts(width=10, height=10), Facts(width=20, height=10)])[0] == 1
    grey = Facts(width=10, height=10, is_grey=True)
    assert choose_best([grey, Facts(width=10, height=10)])[0] == 1
    raw = Facts(width=10, height=10, is_raw=True)
    assert choose_best([Facts(width=10, height=10, jpeg_quality=98), raw]) == (1, "camera RAW")
    early = Facts(width=10, height=10, taken_at="2015:01:01 00:00:00")
    late = Facts(width=10, height=10, taken_at="2016:01:01 00:00:00")
    assert choose_best([late, early])[0] == 1
    few, many = Facts(width=10, height=10, exif_count=3), Facts(width=10, height=10, exif_count=30)
    assert choose_best([few, many]) == (1, "most EXIF (30 tags vs 3)")
    named = [Facts(width=10, height=10, path="a/IMG_0001 (1).jpg"),
             Facts(width=10, height=10, path="b/IMG_0001.jpg")]
    assert choose_best(named) == (1, "not named as a copy (IMG_0001 (1).jpg is)")
    # File size alone never decides.
    small, large = Facts(width=10, height=10, size=100), Facts(width=10, height=10, size=900)
    assert choose_best([small, large]) == (0, "first of equals (same size, quality, date and EXIF)")


def test_a_look_alike_joined_through_one_copy_is_not_best():
    original = Facts(width=100, height=100, copies=3, jpeg_quality=90)
    copies = [Facts(width=100, height=100, copies=2, jpeg_quality=30) for _ in range(2)]
    burst = Facts(width=120, height=100, copies=1)  # larger, linked by one crop only
    assert choose_best([burst, *copies, original])[0] == 3
