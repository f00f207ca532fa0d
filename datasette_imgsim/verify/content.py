"""The content of two aligned frames, compared (verify.py's third step): blocks of
grey at LOW pixels, tone, a moved subject, overlays and fine detail."""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import cv2
import numpy as np

if TYPE_CHECKING:
    from . import Prepared

LOW = 128  # content compared at this long side
AGREE = 0.95  # share of blocks that agree for "the same content"
EDITED = 0.7  # at least this share agrees in an overlay or edit
TONE = 8.0  # median grey difference (0-255) that is another exposure, not a copy
GRID = 12
FINE = 0.93  # fine-detail correlation a crop keeps with its source
CELL = 10  # pixels per block side when blocks are compared
SEARCH = 12  # pixels (at LOW) a moving subject is looked for
BLUR = 1.2  # sigma at LOW
NATIVE = 0.9  # of a picture's own pixels per matched pixel, for fine detail to tell
SHARPER = 0.5  # fine-detail spread ratio under which one side is a blurred copy
SMOOTH = 2.0  # band-passed grey spread (0-255) under which a picture has no fine detail
STROKE = 48  # 3x3 range of a drawn edge (text, a banner's rim) ...
CALM = 12  # ... where the other side's picture is this calm


def _ncc(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / max(np.sqrt((x * x).sum() * (y * y).sum()), 1e-6))


def _low(x: np.ndarray) -> np.ndarray:
    scale = LOW / max(x.shape[:2])
    return cv2.resize(x, (max(8, round(x.shape[1] * scale)), max(8, round(x.shape[0] * scale))),
                      interpolation=cv2.INTER_AREA).astype(np.float32)


def _blocks(x: np.ndarray) -> np.ndarray:
    """x resized to GRID x GRID blocks of CELL x CELL pixels: (GRID, GRID, CELL * CELL)."""
    x = cv2.resize(x, (GRID * CELL, GRID * CELL), interpolation=cv2.INTER_AREA)
    return x.reshape(GRID, CELL, GRID, CELL).swapaxes(1, 2).reshape(GRID, GRID, -1)


def _compare(ref: np.ndarray, other: np.ndarray, to_other) -> dict:
    """Blocks of ref (grey) agreeing with other warped onto it; to_other maps ref -> other."""
    h, w = ref.shape
    warped = cv2.warpPerspective(other, to_other, (w, h),
                                 flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    mask = cv2.warpPerspective(np.full(other.shape, 255, np.uint8), to_other, (w, h),
                               flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP)
    mask = cv2.erode(mask, np.ones((5, 5), np.uint8))
    # Blurred alike, so a blurred or downsized copy agrees with its sharp original.
    r = cv2.GaussianBlur(_low(ref), (0, 0), BLUR)
    o = cv2.GaussianBlur(_low(warped), (0, 0), BLUR)
    m = _low(mask) > 250
    # How many of other's pixels one of ref's spans (a homography close to a similarity).
    affine = to_other[:2, :2] / (to_other[2, 2] or 1e-12)
    scale = float(np.sqrt(abs(np.linalg.det(affine))))
    found = {"agree": 0.0, "tone": 0.0, "bright": 0.0, "blocks": 0, "ref": ref,
             "bad": np.zeros((GRID, GRID), bool), "warped": warped, "mask": mask,
             "scale": scale}
    if m.sum() < 64:
        return found
    tone = float(np.median(o[m] - r[m]))
    rb, ob, mb = _blocks(r), _blocks(o - tone), _blocks(m.astype(np.float32))
    used = mb.min(axis=2) > 0.99
    rc, oc = rb - rb.mean(2, keepdims=True), ob - ob.mean(2, keepdims=True)
    ncc = (rc * oc).sum(2) / np.maximum(np.sqrt((rc * rc).sum(2) * (oc * oc).sum(2)), 1e-6)
    gap = np.abs(rb.mean(2) - ob.mean(2))
    flat = np.maximum(rb.std(2), ob.std(2)) < 4
    ok = np.where(flat, gap < 8, (ncc >= 0.75) & (gap < 14))
    bad = used & ~ok
    total = int(used.sum())
    # Exposure again, on the agreeing blocks' brightest tenth (a night sky's stars
    # brighten while its black stays black; an overlay's banner is left out).
    good = (used & ok).repeat(CELL, 0).repeat(CELL, 1)
    rg = cv2.resize(r, (GRID * CELL, GRID * CELL), interpolation=cv2.INTER_AREA)[good]
    og = cv2.resize(o, (GRID * CELL, GRID * CELL), interpolation=cv2.INTER_AREA)[good]
    if len(rg) >= 32:
        top = rg >= np.percentile(rg, 90)
        found["bright"] = float(np.median((og - rg)[top]))
    found["ref"] = ref
    # Flat blocks agree whatever lies there (a window's chrome in two screenshots): the
    # textured ones decide when there are enough of them.
    textured = used & ~flat
    if textured.sum() >= 8:
        total = int(textured.sum())
    agree = (total - int((bad & (textured if textured.sum() >= 8 else used)).sum())) / max(total, 1)
    found["area"] = int(used.sum())
    # A banner or logo over a flat sky turns flat blocks textured: _overlaid() judges
    # such a pair by the share of the picture that disagrees, when it lies in patches.
    area = 1 - int(bad.sum()) / max(int(used.sum()), 1) if _one_patch(bad) else None
    found.update(agree=agree, agree_area=area, tone=tone, blocks=total, bad=bad,
                 low=(r, o - tone))
    return found


def _apart(found: dict) -> str:
    """Why two overlapping frames show different moments or exposures ("" when their
    common part is the same picture, or when one is much blurrier than the other: a
    blurred or downsized copy beside a crop of one original)."""
    if found["blocks"] < 8:
        return ""
    if max(abs(found["tone"]), abs(found["bright"])) > TONE:
        return ", another exposure"
    fine = _fine(found)
    if not _comparable(found):
        return ""
    # A subject that moved disagrees in one patch; blur disagrees all over the texture.
    if EDITED <= found["agree"] < AGREE and _one_patch(found["bad"]) \
            and _moved(*found["low"], found["bad"]) >= 0.5:
        return ", the subject moved"
    if fine < FINE and found.get("fine_energy", 0.0) > SMOOTH:
        return ", its own fine detail"
    return ""


def _overlaid(found: dict, ref: str, ref_rgb: np.ndarray) -> None:
    """found's agreement by area instead of textured blocks, for a pair that disagrees
    in a few patches where one side is a flat fill (a caption banner, a logo): not
    for a burst's moved subject, natural texture on both sides."""
    area = found.get("agree_area")
    if found["agree"] < EDITED and area is not None and area >= EDITED \
            and _which_edited(ref, ref_rgb, found) is not None:
        found["agree"] = area


def _one_patch(bad: np.ndarray) -> bool:
    """The disagreeing blocks form a few patches (8-connected: a banner, a logo, a
    signature), half of them in one."""
    count, labels = cv2.connectedComponents(bad.astype(np.uint8), connectivity=8)
    if count <= 1:
        return True
    sizes = np.bincount(labels.ravel())[1:]
    return count - 1 <= 4 and sizes.max() >= 0.5 * sizes.sum()


def _fine(found: dict) -> float:
    """Fine detail: band-passed grey at full size, where a copy keeps its source's
    texture and another exposure of the scene has its own (computed once per found)."""
    if "fine" not in found:
        found["fine"] = _fine_detail(found)
    return found["fine"]


def _fine_detail(found: dict) -> float:
    ref, warped, mask = found["ref"], found["warped"], found["mask"]
    scale = found.get("scale", 1.0)
    if scale < 0.9:
        # Other holds this region at fewer pixels (ref is a crop, upscaled to LONG):
        # compare at other's resolution, where both have the detail other kept.
        size = (max(8, round(ref.shape[1] * scale)), max(8, round(ref.shape[0] * scale)))
        ref, warped = (cv2.resize(x, size, interpolation=cv2.INTER_AREA) for x in (ref, warped))
        mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
    inside = mask > 250
    if inside.sum() <= 100:
        return 0.0
    fr, fo = (cv2.GaussianBlur(x.astype(np.float32), (0, 0), 0.8)
              - cv2.GaussianBlur(x.astype(np.float32), (0, 0), 2.5)
              for x in (ref, warped))
    found["fine_energy"] = float(fr[inside].std())
    found["fine_ratio"] = (min(fr[inside].std(), fo[inside].std())
                           / max(fr[inside].std(), fo[inside].std(), 1e-6))
    return _ncc(fr[inside], fo[inside])


def _detail_reason(found: dict) -> str:
    """Why fine detail does not correlate: one side has much less of it (a blurred or
    downsized copy beside a crop: both made from one original, not from each other),
    or each has its own (another exposure or frame)."""
    return ", its own fine detail" if _comparable(found) else ", less fine detail"


def _comparable(found: dict) -> bool:
    """Both sides hold fine detail at the matched size, alike in amount: only then do
    differences in it say "another moment" rather than "another copy"."""
    return found.get("fine_ratio", 1.0) >= SHARPER and found.get("scale", 1.0) >= NATIVE


def _moved(r: np.ndarray, o: np.ndarray, bad: np.ndarray) -> float:
    """Share of the disagreeing blocks found a few pixels away in ref: a subject that
    moved between two frames (an overlay is found nowhere)."""
    ys = np.linspace(0, r.shape[0], GRID + 1).astype(int)
    xs = np.linspace(0, r.shape[1], GRID + 1).astype(int)
    moved = 0
    cells = list(zip(*np.nonzero(bad)))
    for i, j in cells:
        block = o[ys[i]:ys[i + 1], xs[j]:xs[j + 1]]
        y0, y1 = max(0, ys[i] - SEARCH), min(r.shape[0], ys[i + 1] + SEARCH)
        x0, x1 = max(0, xs[j] - SEARCH), min(r.shape[1], xs[j + 1] + SEARCH)
        if block.std() < 4 or block.shape[0] < 3 or block.shape[1] < 3:
            continue
        scores = cv2.matchTemplate(r[y0:y1, x0:x1], block, cv2.TM_CCOEFF_NORMED)
        _, score, _, (x, y) = cv2.minMaxLoc(scores)
        # Found elsewhere, at the same contrast (a translucent banner correlates with
        # the picture under it, in place and at a fraction of its contrast).
        found = r[y0 + y:y0 + y + block.shape[0], x0 + x:x0 + x + block.shape[1]]
        shifted = abs(y0 + y - ys[i]) + abs(x0 + x - xs[j]) >= 2
        same = r[ys[i]:ys[i + 1], xs[j]:xs[j + 1]]
        moved += (score >= 0.85 and shifted and abs(block.mean() - found.mean()) < 8
                  and 0.75 <= block.std() / max(found.std(), 1e-6) <= 1.33
                  and 0.6 <= block.std() / max(same.std(), 1e-6) <= 1.6)
    return moved / max(len(cells), 1)


def _few_colours(rgb: np.ndarray, mask: np.ndarray) -> float:
    """Share of the masked pixels in their six commonest colours (64 levels a channel):
    a border or a viewer's window is a few fills; the smooth wall around a cropped
    clock is a gradient of many."""
    pixels = np.atleast_3d(rgb)[mask]
    if len(pixels) < 50:
        return 0.0
    codes = (pixels.astype(np.int32) >> 2) @ np.array([1, 64, 4096][:pixels.shape[1]])
    counts = np.bincount(codes)
    return float(np.sort(counts)[-6:].sum() / len(codes))


def _spread(x: np.ndarray) -> np.ndarray:
    """3x3 range of each pixel, the largest over the channels."""
    k = np.ones((3, 3), np.uint8)
    return np.atleast_3d(cv2.dilate(x, k).astype(np.int16) - cv2.erode(x, k)).max(axis=2)


def _flat(rgb: np.ndarray, mask: np.ndarray) -> float:
    """Share of the masked pixels in flat fills (borders, banners): 3x3 range <= 2."""
    if mask.sum() < 50:
        return 0.0
    return float((_spread(rgb)[mask] <= 2).mean())


def _departure(grey: np.ndarray, bad: np.ndarray, ring: np.ndarray) -> float:
    """How unlike its surroundings a side's disagreeing region is: a banner or logo
    shifts the level and the spread of what lies under it; the picture itself goes
    on across the edge of the region (a smooth wall under a caption stays a wall)."""
    (inner_mean,), (inner_std,) = (v.ravel() for v in cv2.meanStdDev(grey, mask=bad))
    (outer_mean,), (outer_std,) = (v.ravel() for v in cv2.meanStdDev(grey, mask=ring))
    return (abs(inner_mean - outer_mean) / (outer_std + 8.0)
            + 2.0 * abs(np.log((inner_std + 2.0) / (outer_std + 2.0))))


def _which_edited(ref, ref_rgb, found) -> Optional[str]:
    """The side carrying an overlay: the one whose disagreeing blocks hold what the
    other lacks - flat fills, drawn strokes (text, a banner's rim) where the other is
    calm, a level and spread unlike the picture around them - and not merely the
    flatter one (the smooth wall or sky under a translucent caption is flatter than
    the caption). Asked twice per pair (_overlaid, then the verdict): computed once."""
    key = ("edited", ref)
    if key not in found:
        found[key] = _edited_side(ref, ref_rgb, found)
    return found[key]


def _edited_side(ref, ref_rgb, found) -> Optional[str]:
    size = ref_rgb.shape[1::-1]
    inside = found["mask"] > 0
    blocks = found["bad"].astype(np.uint8)
    bad = (cv2.resize(blocks, size, interpolation=cv2.INTER_NEAREST) > 0) & inside
    count = int(bad.sum())
    if count < 50:
        return None
    # The blocks around the disagreeing ones: the picture both sides agree on.
    around = cv2.dilate(blocks, np.ones((3, 3), np.uint8)) & (1 - blocks)
    ring = (cv2.resize(around, size, interpolation=cv2.INTER_NEAREST) > 0) & inside
    grey_ref = cv2.cvtColor(ref_rgb, cv2.COLOR_RGB2GRAY)
    grey_other = found["warped"]
    spread_ref, spread_other = _spread(grey_ref), _spread(grey_other)
    bad8, ring8 = bad.view(np.uint8), ring.view(np.uint8)
    use_ring = ring.sum() >= 50

    def overlaid(grey, spread, calm):
        flat = np.count_nonzero((spread <= 2) & bad)
        strokes = np.count_nonzero((spread >= STROKE) & (calm < CALM) & bad)
        return ((_departure(grey, bad8, ring8) if use_ring else 0.0)
                + (2.0 * flat + 5.0 * strokes) / count)

    score = (overlaid(grey_ref, spread_ref, spread_other)
             - overlaid(grey_other, spread_other, spread_ref))
    if abs(score) < 0.05:
        return None
    return ref if score > 0 else ("b" if ref == "a" else "a")


def _density(p: Prepared) -> float:
    """Decoded pixels per matched pixel, at most 1: under 1 for an upscaled picture."""
    return min(1.0, p.width / p.rgb.shape[1])


def _limit_resolution(found: dict, ref: Prepared, other: Prepared) -> None:
    """The finest detail both hold, in ref's matched pixels (a 25 % copy upscaled to
    LONG holds less than its size says): where _fine compares them."""
    found["scale"] = min(_density(ref), found.get("scale", 1.0) * _density(other))
