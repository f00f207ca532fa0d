"""Is this pair a copy, or only a similar shot? Evidence instead of a bare distance.

Two pictures are compared in three steps, cheapest first:

1. settle(): small signatures (a 64-bit pHash, a 32x32 grey thumbnail, the aspect)
   settle the obvious pairs without local features: the same picture re-encoded or
   resized (pHash within 4 bits, thumbnails alike to 1.5 grey levels).
2. Geometry: SIFT keypoints matched with Lowe's ratio test and a RANSAC homography
   (the mirrored picture too). The homography says how much of each frame the other
   covers: a crop covers part of its source and is covered entirely; two frames of a
   pan, or a burst's frames a few per cent apart, each cover only part of the other. A
   homography far from a similarity (scale, rotation, shift) is another viewpoint.
3. Content: the second picture warped onto the first, compared at LOW pixels in
   GRID x GRID blocks (normalised correlation), in tone (median grey difference, and
   that of the brightest tenth) and in fine detail (band-passed grey at LONG). A
   re-encode agrees everywhere; a caption or logo disagrees in a few blocks that are
   found nowhere nearby; a burst's moving subject is found a few pixels away; a
   bracketed exposure is shifted in tone; a crop keeps its source's fine detail.

frames.py holds step 2, content.py step 3.

verify_pair() takes RGB uint8 arrays (any size; they are matched at LONG pixels) or
Prepared ones (prepare() once per image when one image is in many pairs).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Optional

import cv2
import numpy as np

from ..rerank import LocalFeatures, local_features
from .content import (AGREE, EDITED, FINE, SMOOTH, TONE, _apart, _comparable, _compare,
                      _detail_reason, _few_colours, _fine, _flat, _limit_resolution, _moved,
                      _ncc, _overlaid, _which_edited)
from .frames import MIN_INLIERS, _cover, _homography, _is_similarity, _locate, _rotation

LONG = 384  # matched at this long side (smaller images are upscaled to it)
FRAMED = 0.88  # a screenshot's or bordered copy's picture covers at most this
CONTAINED = 0.96  # a frame covered at least this much lies inside the other
BLURRED = 0.35  # sharpness ratio (Laplacian variance) of a blurred copy
OVERLAPPING = 0.6  # frames that overlap this much (IoU) are compared where they overlap

COPY_KINDS = ("same picture", "crop", "greyscale copy", "mirror image", "overlay",
              "screenshot/border")


@dataclass
class Verdict:
    is_copy: bool
    kind: str  # a COPY_KINDS entry, "similar shot" or "different"
    reason: str  # in words
    overlap: float = 0.0  # intersection over union of the two frames' content
    inliers: int = 0
    which_is_source: Optional[str] = None  # "a" or "b": the one the other was made from
    mirrored: bool = False
    grey: Optional[str] = None  # "a" or "b": the greyscale one of a colour/grey pair
    edited: Optional[str] = None  # "a" or "b": the one with an overlay
    stage: str = "geometry"  # "cheap", "geometry" or "direct" (whole frames compared)
    # How faithfully the content matches (the fine-detail correlation of a crop, the
    # agreeing share of blocks otherwise): which of two doubtful links is the better.
    fidelity: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)

    def swapped(self) -> "Verdict":
        """The same verdict with a and b exchanged."""
        flip = {"a": "b", "b": "a", None: None}
        return replace(self, which_is_source=flip[self.which_is_source], grey=flip[self.grey],
                       edited=flip[self.edited])


@dataclass
class Prepared:
    rgb: np.ndarray  # resized so the long side is LONG
    grey: np.ndarray
    width: int  # of the array given to prepare()
    height: int
    is_grey: bool
    phash: np.ndarray  # 64 bools
    thumb: np.ndarray  # 32x32 float32 grey
    features: Optional[LocalFeatures] = None
    mirrored: Optional[LocalFeatures] = None  # of the mirrored picture, made when needed
    upscaled: bool = False  # smaller than LONG: matched less precisely

    @property
    def aspect(self) -> float:
        return self.width / self.height


def is_greyscale(rgb: np.ndarray) -> bool:
    """No colour anywhere (chroma a re-encode leaves is tolerated)."""
    small = rgb[:: max(1, rgb.shape[0] // 128), :: max(1, rgb.shape[1] // 128)].astype(np.int16)
    chroma = np.abs(small - small.mean(axis=2, keepdims=True)).max(axis=2)
    # Colour in under 3 % of the picture (a logo on a grey photo) is still grey.
    return float((chroma > 8).mean()) < 0.03


def _phash(grey: np.ndarray) -> np.ndarray:
    small = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8].ravel()
    return low > np.median(low)


def prepare(pixels: np.ndarray, features: bool = True) -> Prepared:
    """An image's signatures (and, with features, its SIFT keypoints)."""
    height, width = pixels.shape[:2]
    scale = LONG / max(height, width)
    size = (max(8, round(width * scale)), max(8, round(height * scale)))
    rgb = cv2.resize(np.ascontiguousarray(pixels), size,
                     interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    thumb = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    out = Prepared(rgb, grey, width, height, is_greyscale(rgb), _phash(grey), thumb,
                   upscaled=scale > 1.5)
    if features:
        out.features = local_features(rgb)
    return out


def with_features(p: Prepared) -> Prepared:
    """p with its SIFT keypoints (computed once)."""
    if p.features is None:
        p.features = local_features(p.rgb)
    return p


def _prepared(x, features=True) -> Prepared:
    if isinstance(x, Prepared):
        if features and x.features is None:
            x.features = local_features(x.rgb)
        return x
    return prepare(x, features)


def settle(a, b) -> Optional[Verdict]:
    """A verdict from signatures alone when the case is obvious, else None (then
    verify_pair's geometry is needed). a, b: Prepared (features not needed) or pixels."""
    a, b = _prepared(a, False), _prepared(b, False)
    same_aspect = abs(np.log(a.aspect / b.aspect)) < 0.01
    hamming = int((a.phash != b.phash).sum())
    if same_aspect and hamming <= 4 and a.is_grey == b.is_grey:
        diff = np.abs(a.thumb - b.thumb)
        if (_ncc(a.thumb, b.thumb) >= 0.995 and float(np.median(diff)) <= 1.5
                and float(diff.mean()) <= 2.5):
            return _same(a, b, 1.0, 0, "cheap")
    # Nothing is settled as "different" here: a crop of 64 % has a pHash and a
    # thumbnail as far from its source's as an unrelated picture's. Leave such pairs
    # out at the candidate stage (a generous bound on the index's methods) instead.
    return None


def needs_geometry(a, b) -> bool:
    return settle(a, b) is None


def _same(a: Prepared, b: Prepared, overlap, inliers, stage, mirrored=False) -> Verdict:
    pixels_a, pixels_b = a.width * a.height, b.width * b.height
    ratio = min(pixels_a, pixels_b) / max(pixels_a, pixels_b)
    source = None
    reason = "same picture, re-encoded"
    if ratio < 0.8:
        source = "a" if pixels_a > pixels_b else "b"
        reason = f"same picture, resized to {100 * np.sqrt(ratio):.0f} %"
    else:
        sharp_a, sharp_b = _sharpness(a.grey), _sharpness(b.grey)
        if min(sharp_a, sharp_b) < BLURRED * max(sharp_a, sharp_b):
            source = "a" if sharp_a > sharp_b else "b"
            reason = "same picture, blurred"
    if mirrored:
        return Verdict(True, "mirror image", "mirror image", overlap, inliers, source, True,
                       stage=stage)
    return Verdict(True, "same picture", reason, overlap, inliers, source, stage=stage)


def _sharpness(grey: np.ndarray) -> float:
    return float(cv2.Laplacian(grey, cv2.CV_32F).var())


def verify_pair(a, b, facts_a=None, facts_b=None) -> Verdict:
    """Copy or similar shot? a, b: RGB uint8 arrays or Prepared. facts_*: optional
    objects or dicts with width/height of the full-size files (for size relations)."""
    a, b = _prepared(a), _prepared(b)
    a, b = _with_facts(a, facts_a), _with_facts(b, facts_b)
    matrix, count = _homography(a.features, b.features)
    mirrored = False
    if count < 60 and _mirror_likely(a, b, count):
        if a.mirrored is None:
            a.mirrored = a.features.flipped()
        m_matrix, m_count = _homography(a.mirrored, b.features)
        if m_count > max(count * 1.2, MIN_INLIERS):
            matrix, count, mirrored = m_matrix, m_count, True
    if matrix is None or count < MIN_INLIERS:
        located = _locate(a, b)
        if located is None:
            return _direct(a, b)
        # Too few features to match (clouds, a smooth dial): where one frame lies in
        # the other was found by correlation; the content decides as for a match.
        verdict = _geometric(a, b, located, 0, False, strict=True)
        return verdict if verdict.is_copy else _direct(a, b)
    return _geometric(a, b, matrix, count, mirrored)


def _geometric(a: Prepared, b: Prepared, matrix, count: int, mirrored: bool,
               strict: bool = False) -> Verdict:
    """The verdict on a pair whose frames are related by matrix (a's pixels -> b's)."""
    a_rgb = np.ascontiguousarray(a.rgb[:, ::-1]) if mirrored else a.rgb
    a_grey = np.ascontiguousarray(a.grey[:, ::-1]) if mirrored else a.grey
    size_a, size_b = a_grey.shape[::-1], b.grey.shape[::-1]
    try:
        inverse = np.linalg.inv(matrix)
    except np.linalg.LinAlgError:
        return _direct(a, b)
    cov_b, area_a_in_b = _cover(matrix, size_a, size_b)  # b's frame covered by a
    cov_a, area_b_in_a = _cover(inverse, size_b, size_a)  # a's frame covered by b
    if area_a_in_b <= 0 or area_b_in_a <= 0:
        return _direct(a, b)
    inter = cov_a * size_a[0] * size_a[1]
    overlap = inter / max(size_a[0] * size_a[1] + area_b_in_a - inter, 1e-6)
    if not _is_similarity(matrix, size_a) or overlap < 0.05:
        # Another viewpoint, or a degenerate fit on a repetitive texture.
        direct = _direct(a, b)
        if direct.is_copy:
            return direct
        return _similar(", another viewpoint", overlap, count, mirrored)
    # An upscaled (small) picture's keypoints are placed less precisely.
    contained = CONTAINED - (0.03 if a.upscaled or b.upscaled else 0)
    if max(cov_a, cov_b) < contained:
        # Neither lies inside the other: two crops of one picture, or a burst's frames.
        # Where they overlap, the content tells which.
        reason = ""
        if overlap >= OVERLAPPING:
            found = _compare(a_grey, b.grey, matrix)
            _limit_resolution(found, a, b)
            reason = _apart(found)
        return _similar(reason, overlap, count, mirrored)
    # ref: the frame that lies inside the other; content compared on ref's frame.
    if cov_b >= cov_a:
        ref, other, to_other, holder, holder_cov, ref_rgb = "b", a_grey, inverse, "a", cov_a, b.rgb
        holder_rgb, ref_to_holder = a_rgb, inverse
    else:
        ref, other, to_other, holder, holder_cov, ref_rgb = "a", b.grey, matrix, "b", cov_b, a_rgb
        holder_rgb, ref_to_holder = b.rgb, matrix
    ref_grey = b.grey if ref == "b" else a_grey
    found = _compare(ref_grey, other, to_other)
    _limit_resolution(found, a if ref == "a" else b, b if ref == "a" else a)
    found["angle"] = float(np.degrees(np.arctan2(matrix[1, 0], matrix[0, 0])))
    return _judge(a, b, found, ref, holder, holder_cov < contained, holder_cov, overlap,
                  count, mirrored, ref_rgb, holder_rgb, ref_to_holder, strict)


def _similar(reason: str, overlap: float, count: int, mirrored: bool) -> Verdict:
    return Verdict(False, "similar shot", f"similar shot: {100 * overlap:.0f} % overlap{reason}",
                   overlap, count, mirrored=mirrored)


def _mirror_likely(a: Prepared, b: Prepared, count: int) -> bool:
    """Worth matching mirrored: the direct match is weak, or the mirrored thumbnail is
    at least as close as the direct one (saves a second match for most pairs)."""
    if count < MIN_INLIERS:
        return True
    return _ncc(a.thumb[:, ::-1], b.thumb) >= _ncc(a.thumb, b.thumb)


def _with_facts(p: Prepared, facts) -> Prepared:
    if facts is None:
        return p
    get = facts.get if isinstance(facts, dict) else (lambda k: getattr(facts, k, None))
    if get("width") and get("height"):
        return replace(p, width=int(get("width")), height=int(get("height")))
    return p


def _judge(a, b, found, ref, holder, inside, holder_cov, overlap, count, mirrored,
           ref_rgb, holder_rgb, ref_to_holder, strict=False) -> Verdict:
    _overlaid(found, ref, ref_rgb)
    if strict and _fine(found) < FINE and found.get("fine_energy", 0.0) > SMOOTH:
        # Located by correlation (too few features to match): a copy keeps the fine
        # detail of its source; two smooth textures alike in the large do not.
        return _similar(_detail_reason(found), overlap, count, mirrored)
    grey = None
    if a.is_grey != b.is_grey:
        grey = "a" if a.is_grey else "b"
    shift = max(found["tone"], found["bright"], key=abs)
    if abs(shift) > TONE:
        sign = "brighter" if (shift > 0) == (ref == "a") else "darker"
        return Verdict(False, "similar shot", f"similar shot: another exposure (b {sign})",
                       overlap, count, mirrored=mirrored, stage="geometry")
    _fine(found)
    # One side much blurrier (a blurred or downsized copy beside a crop), or either
    # upscaled to be matched: blocks and detail then disagree for that alone, which
    # tells nothing about moments or exposures.
    blurrier = None if _comparable(found) else ", less fine detail"
    if EDITED <= found["agree"] < AGREE and _moved(*found["low"], found["bad"]) >= 0.5:
        return _similar(blurrier or ", the subject moved", overlap, count, mirrored)
    if found["agree"] < EDITED or found["blocks"] < 8:
        return _similar(blurrier or ", content differs", overlap, count, mirrored)
    notes, kind, source, fidelity = [], None, None, 1.0
    if inside:  # ref lies inside holder: a crop of it, or it in a frame
        if found["agree"] < AGREE:
            # Content differs in places: another frame of a burst, or a pan whose part
            # falls on a screenshot's window.
            return _similar("", overlap, count, mirrored)
        outside = cv2.warpPerspective(np.full(ref_rgb.shape[:2], 255, np.uint8), ref_to_holder,
                                      holder_rgb.shape[1::-1], flags=cv2.INTER_NEAREST)
        outside = cv2.erode(255 - outside, np.ones((5, 5), np.uint8)) > 0
        # A border or window is flat and substantial (a burst's frame zoomed in a few
        # per cent leaves thin strips, dark ones at night).
        if holder_cov <= FRAMED and _flat(holder_rgb, outside) >= 0.6 \
                and _few_colours(holder_rgb, outside) >= 0.8:
            kind, source = "screenshot/border", ref
            notes.append(f"screenshot or bordered copy ({100 * holder_cov:.0f} % of it is "
                         f"the picture)")
        else:
            fidelity = _fine(found)
            if fidelity < FINE and found.get("fine_energy", 0.0) > SMOOTH:
                # A crop keeps its source's fine texture; a burst's next frame, zoomed
                # in, has its own (noise, resampling, small motion).
                return _similar(_detail_reason(found), overlap, count, mirrored)
            kind, source = "crop", holder
            notes.append(f"crop of {100 * holder_cov:.0f} % of the original")
    edited = None
    if found["agree"] < AGREE:
        bad = found["bad"]
        share = bad.sum() / max(found.get("area", found["blocks"]), 1)
        edited = _which_edited(ref, ref_rgb, found)
        notes.append(f"overlay or edit over {100 * share:.0f} % of the picture")
        kind = kind or "overlay"
        if source is None and edited:
            source = "a" if edited == "b" else "b"
    if mirrored:
        notes.insert(0, "mirror image")
        kind = "mirror image" if kind in (None, "overlay") else kind
    if grey:
        notes.insert(0, "greyscale copy")
        kind = "greyscale copy" if kind in (None, "overlay", "mirror image") else kind
        source = source or ("a" if grey == "b" else "b")
    if kind is None:
        verdict = _same(a, b, overlap, count, "geometry")
        verdict.edited = edited
        turned = _rotation(found.get("angle", 0.0))
        if turned and verdict.reason == "same picture, re-encoded":
            verdict.reason = f"same picture, rotated {turned}"
        return verdict
    return Verdict(True, kind, ", ".join(notes), overlap, count, source, mirrored, grey, edited,
                   fidelity=fidelity if kind == "crop" else float(found["agree"]))


def _direct(a: Prepared, b: Prepared) -> Verdict:
    """No geometric match (blurred, tiny or featureless): whole frames of the same
    aspect compared directly, mirrored too."""
    if abs(np.log(a.aspect / b.aspect)) > 0.02:
        return Verdict(False, "different", "no matching features", stage="direct")
    size = b.grey.shape[::-1]
    scale = np.diag([size[0] / a.grey.shape[1], size[1] / a.grey.shape[0], 1.0])
    best = None
    for mirrored in (False, True):
        grey = np.ascontiguousarray(a.grey[:, ::-1]) if mirrored else a.grey
        found = _compare(grey, b.grey, scale)
        if best is None or found["agree"] > best[0]["agree"]:
            best = (found, mirrored)
    found, mirrored = best
    _overlaid(found, "a", np.ascontiguousarray(a.rgb[:, ::-1]) if mirrored else a.rgb)
    if found["agree"] >= AGREE and max(abs(found["tone"]), abs(found["bright"])) <= TONE:
        verdict = _same(a, b, 1.0, 0, "direct", mirrored)
        if a.is_grey != b.is_grey:
            verdict.kind, verdict.reason = "greyscale copy", "greyscale copy"
            verdict.grey = "a" if a.is_grey else "b"
            verdict.which_is_source = "b" if a.is_grey else "a"
        return verdict
    # An overlay on a featureless picture; not on an upscaled one, whose blur alone
    # lets a burst's next frame agree this well.
    if (EDITED <= found["agree"] and max(abs(found["tone"]), abs(found["bright"])) <= TONE
            and not (a.upscaled or b.upscaled) and _moved(*found["low"], found["bad"]) < 0.5):
        edited = _which_edited("a", a.rgb[:, ::-1] if mirrored else a.rgb, found)
        return Verdict(True, "overlay", f"overlay or edit over {100 * (1 - found['agree']):.0f} "
                       "% of the picture", 1.0, 0, {"a": "b", "b": "a"}.get(edited), mirrored,
                       edited=edited, stage="direct")
    kind = "similar shot" if found["agree"] >= 0.3 else "different"
    return Verdict(False, kind, f"{kind}: no matching features", stage="direct")
