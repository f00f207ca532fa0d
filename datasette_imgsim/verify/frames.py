"""Where two frames lie in each other (verify.py's second step): SIFT matches under a
RANSAC homography, how much of each frame the other covers, and for pictures with too
few features a location by correlation over scales, refined with ECC."""
from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

from ..rerank import LocalFeatures
from .content import _low

if TYPE_CHECKING:
    from . import Prepared

LOCATE_SCALES = np.geomspace(0.4, 1.0, 14)  # the inner frame's long side, of the outer's
LOCATED = 0.9  # correlation of the located frame with the region it lies on
MIN_INLIERS = 15
RATIO = 0.75
SIMILARITY = 0.03  # corner error (of the diagonal) allowed for a similarity transform


def _homography(fa: LocalFeatures, fb: LocalFeatures):
    if (fa is None or fb is None or fa.descriptors is None or fb.descriptors is None
            or len(fa.points) < 4 or len(fb.points) < 4):
        return None, 0
    # Lowe's ratio test on each descriptor's two nearest (OpenCV's brute-force matcher:
    # the same neighbours as an all-pairs distance matrix, in half the time).
    if len(fb.points) < 2:
        return None, 0
    pairs = _matcher().knnMatch(fa.descriptors, fb.descriptors, k=2)
    good = [(m.queryIdx, m.trainIdx) for m, n in (p for p in pairs if len(p) == 2)
            if m.distance < RATIO * n.distance]
    if len(good) < MIN_INLIERS:
        return None, 0
    src = fa.points[[q for q, _ in good]]
    dst = fb.points[[t for _, t in good]]
    matrix, mask = cv2.findHomography(src, dst, cv2.RANSAC, 4.0)
    if matrix is None:
        return None, 0
    return matrix, int(mask.sum())


def _matcher():
    if not hasattr(_matcher, "instance"):
        _matcher.instance = cv2.BFMatcher(cv2.NORM_L2)
    return _matcher.instance


def _corners(w, h) -> np.ndarray:
    return np.float32([[0, 0], [w, 0], [w, h], [0, h]])


def _cover(matrix, size_from, size_to) -> tuple[float, float]:
    """(share of the `to` frame covered by the `from` frame mapped by matrix, mapped area)."""
    poly = cv2.perspectiveTransform(_corners(*size_from)[None], matrix)[0]
    area = abs(cv2.contourArea(poly))
    if not cv2.isContourConvex(poly.astype(np.float32)):
        return 0.0, area
    w, h = size_to
    # Sutherland-Hodgman clipping to the frame (OpenCV's convex intersection errs when
    # edges coincide, as they do for two copies of one frame).
    points = [tuple(p) for p in poly.astype(np.float64)]
    for axis, bound, sign in ((0, 0.0, 1), (0, w, -1), (1, 0.0, 1), (1, h, -1)):
        inside = [sign * (p[axis] - bound) >= 0 for p in points]
        clipped = []
        for k, p in enumerate(points):
            q = points[k - 1]
            if inside[k] != inside[k - 1]:  # the edge q-p crosses the bound
                t = (bound - q[axis]) / ((p[axis] - q[axis]) or 1e-12)
                clipped.append((q[0] + t * (p[0] - q[0]), q[1] + t * (p[1] - q[1])))
            if inside[k]:
                clipped.append(p)
        points = clipped
        if len(points) < 3:
            return 0.0, area
    return abs(cv2.contourArea(np.float32(points))) / (w * h), area


def _is_similarity(matrix, size) -> bool:
    src = _corners(*size)
    dst = cv2.perspectiveTransform(src[None], matrix)[0]
    fit, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)
    if fit is None:
        return False
    error = np.abs(src @ fit[:, :2].T + fit[:, 2] - dst).max()
    return error <= SIMILARITY * np.hypot(*cv2.boundingRect(dst)[2:])


def _locate(a: Prepared, b: Prepared):
    """For pictures without enough local features: where one frame lies inside the other
    (a crop in its source, a photo in a screenshot), by normalised cross-correlation of
    blurred grey at LOW pixels over scales. The matrix a -> b (LONG-size pixels), or None."""
    best = None
    for inner, outer, forward in ((a, b, True), (b, a, False)):
        ri = cv2.GaussianBlur(_low(inner.grey), (0, 0), 1.0)
        ro = cv2.GaussianBlur(_low(outer.grey), (0, 0), 1.0)
        for share in LOCATE_SCALES:
            k = share * max(ro.shape) / max(ri.shape)
            size = (round(ri.shape[1] * k), round(ri.shape[0] * k))
            if size[0] > ro.shape[1] or size[1] > ro.shape[0] or min(size) < 16:
                continue
            if size == ro.shape[::-1]:
                continue  # the whole frame: _direct compares that
            template = cv2.resize(ri, size, interpolation=cv2.INTER_AREA)
            if template.std() < 2:
                continue
            scores = cv2.matchTemplate(ro, template, cv2.TM_CCOEFF_NORMED)
            _, score, _, (x, y) = cv2.minMaxLoc(scores)
            if best is None or score > best[0]:
                best = (score, forward, k, x, y, inner, outer, ri, ro)
    if best is None or best[0] < LOCATED:
        return None
    score, forward, k, x, y, inner, outer, ri, ro = best
    to_low_inner = ri.shape[1] / inner.grey.shape[1]
    from_low_outer = outer.grey.shape[1] / ro.shape[1]
    scale = to_low_inner * k * from_low_outer
    inner_to_outer = np.array([[scale, 0, x * from_low_outer], [0, scale, y * from_low_outer],
                               [0, 0, 1]], np.float64)
    inner_to_outer = _refine(inner.grey, outer.grey, inner_to_outer)
    return inner_to_outer if forward else np.linalg.inv(inner_to_outer)


def _refine(inner: np.ndarray, outer: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """A located frame aligned to the pixel (the scales searched are ~7 % apart):
    OpenCV's ECC alignment from the coarse estimate; the estimate where it fails."""
    warp = matrix[:2].astype(np.float32)
    template = cv2.GaussianBlur(inner.astype(np.float32), (0, 0), 1.0)
    image = cv2.GaussianBlur(outer.astype(np.float32), (0, 0), 1.0)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 60, 1e-5)
    try:
        _, warp = cv2.findTransformECC(template, image, warp, cv2.MOTION_AFFINE, criteria,
                                       None, 5)
    except cv2.error:
        return matrix
    return np.vstack([warp.astype(np.float64), [0, 0, 1]])


def _rotation(angle: float) -> str:
    """How far one picture is turned from the other ("90°", "180°", "12°"), "" when
    upright: either way, as which of the two was turned is not known."""
    quarter = round(angle / 90) * 90
    if abs(angle - quarter) <= 3 and quarter % 360:
        return "180°" if abs(quarter) == 180 else "90°"
    return f"{abs(round(angle))}°" if abs(angle) >= 3 else ""
