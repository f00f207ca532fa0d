"""Geometric re-ranking: confirm a search's top candidates by matching local features.

SIFT keypoints of the query and of each candidate are matched with Lowe's ratio test
and a RANSAC homography; the candidates are re-ordered by their inlier count (a crop,
rotation, perspective change or overlay still leaves many inliers; a merely similar
picture leaves few). The query is also matched mirrored, so flipped copies count.

Features are computed on demand for a bounded number of candidates (CANDIDATES) from
images decoded at reduced size, with a small per-process cache (LRU, CACHE_SIZE
images). Storing them at index time would cost 64-256 KB per image (500 SIFT
descriptors) to save the ~50 ms of decoding and extraction per cold candidate; see
the README's "Geometric re-ranking" section for the measured latencies.
"""
from __future__ import annotations

import collections
import os
import threading
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from .errors import ImageError, NotFound, RerankError, ThumbnailError
from .files import allowed_file
from .images import load_image
from .source import blob_fingerprint, file_fingerprint, image_value
from .store import IndexSpec, Store

RERANK_METHODS = ("geometric",)
CANDIDATES = 20  # re-rank at most this many of the nearest results
MIN_INLIERS = 12  # fewer RANSAC inliers than this is no geometric match
LONG_SIDE = 384  # images are matched at this size at most
FEATURES = 500  # SIFT keypoints kept per image
RATIO = 0.75
CACHE_SIZE = 512


def parse_rerank(value: Any) -> Optional[str]:
    if value is None or value == "" or value == "none":
        return None
    if value not in RERANK_METHODS:
        raise RerankError(f"rerank must be one of: {', '.join(RERANK_METHODS)} (not {value!r})")
    return value


@dataclass
class LocalFeatures:
    points: np.ndarray  # (n, 2) float32 keypoint positions
    descriptors: Optional[np.ndarray]  # (n, 128) float32, or None when no keypoints
    mirrored: Optional["LocalFeatures"] = None  # the same image flipped left-right
    width: int = 0  # of the image the keypoints were found in

    def flipped(self) -> "LocalFeatures":
        """The features of the image flipped left-right, derived rather than detected
        again (a second SIFT pass costs as much as the first): SIFT is symmetric, so a
        keypoint at x lies at width - x in the mirror, and its descriptor's 4x4 grid
        (rows along the keypoint's orientation) and 8 orientation bins turn over:
        rows reversed, bin o -> -o. Matched against a real mirror this finds 99 % of
        the inliers a detection on the flipped image does."""
        if self.descriptors is None or not len(self.points):
            return LocalFeatures(self.points, self.descriptors, width=self.width)
        points = self.points.copy()
        points[:, 0] = self.width - 0.5 - points[:, 0]
        grid = self.descriptors.reshape(-1, 4, 4, 8)[:, ::-1][..., _FLIPPED_BINS]
        return LocalFeatures(points, np.ascontiguousarray(grid.reshape(len(points), -1)),
                             width=self.width)


_FLIPPED_BINS = [(-o) % 8 for o in range(8)]


_sift = threading.local()


def _detector():
    import cv2

    if not hasattr(_sift, "detector"):
        _sift.detector = cv2.SIFT_create(nfeatures=FEATURES)
    return _sift.detector


def local_features(pixels: np.ndarray, mirror: bool = False) -> LocalFeatures:
    """SIFT keypoints and descriptors of an RGB image, matched at LONG_SIDE pixels at most."""
    import cv2

    grey = cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGB2GRAY)
    scale = LONG_SIDE / max(grey.shape)
    if scale < 1:
        grey = cv2.resize(grey, (max(1, round(grey.shape[1] * scale)),
                                 max(1, round(grey.shape[0] * scale))),
                          interpolation=cv2.INTER_AREA)
    keypoints, descriptors = _detector().detectAndCompute(grey, None)
    points = np.array([kp.pt for kp in keypoints], np.float32).reshape(-1, 2)
    features = LocalFeatures(points, descriptors, width=grey.shape[1])
    if mirror:
        features.mirrored = features.flipped()
    return features


def inliers(query: LocalFeatures, candidate: LocalFeatures) -> int:
    """RANSAC homography inliers among ratio-test matches (the mirrored query too)."""
    best = _inliers(query, candidate)
    if query.mirrored is not None:
        best = max(best, _inliers(query.mirrored, candidate))
    return best


def _inliers(a: LocalFeatures, b: LocalFeatures) -> int:
    import cv2

    if a.descriptors is None or b.descriptors is None or len(a.points) < 4 or len(b.points) < 4:
        return 0
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    pairs = matcher.knnMatch(a.descriptors, b.descriptors, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < RATIO * p[1].distance]
    if len(good) < 4:
        return 0
    src = a.points[[m.queryIdx for m in good]]
    dst = b.points[[m.trainIdx for m in good]]
    _, mask = cv2.findHomography(src, dst, cv2.RANSAC, 5.0)
    return int(mask.sum()) if mask is not None else 0


# --- candidates' images ----------------------------------------------------------------

_cache: "collections.OrderedDict[str, LocalFeatures]" = collections.OrderedDict()
_cache_lock = threading.Lock()


def row_image(store: Store, spec: IndexSpec, pk) -> Any:
    """A row's image source: bytes (a BLOB), or the path of a regular file under the
    index's allowed roots (the same rule as thumbnails)."""
    try:
        value = image_value(store.conn, spec, pk)
    except NotFound:
        value = None
    if value is None:
        raise ImageError(f"row {pk!r} of {spec.table!r} has no image")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    try:
        return str(allowed_file(str(value).strip(), spec.root or ".", store.roots(spec.table)))
    except ThumbnailError as e:
        raise ImageError(str(e)) from None


def row_features(store: Store, spec: IndexSpec, pk) -> Optional[LocalFeatures]:
    """A row's local features (cached per process), or None if its image cannot be read."""
    try:
        source = row_image(store, spec, pk)
    except ImageError:
        return None
    if isinstance(source, bytes):
        key = blob_fingerprint(source)
    else:
        try:
            key = f"{file_fingerprint(os.stat(source))}:{source}"
        except OSError:
            return None
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    try:
        features = local_features(load_image(source, LONG_SIDE // 2))
    except ImageError:
        return None
    with _cache_lock:
        _cache[key] = features
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return features


def query_features(source) -> LocalFeatures:
    """The query image's features, mirrored as well (ImageError if it is not an image)."""
    return local_features(load_image(source, LONG_SIDE // 2), mirror=True)


def rerank(store: Store, spec: IndexSpec, query: LocalFeatures, results: list[dict],
           candidates: int = CANDIDATES) -> list[dict]:
    """results (nearest first) with the first `candidates` confirmed by local features
    and re-ordered (see reorder); each re-ranked result gains "inliers"."""
    scores = {}
    for result in results[:candidates]:
        features = row_features(store, spec, result["pk"])
        scores[result["pk"]] = inliers(query, features) if features is not None else 0
    return reorder(results, scores, candidates)


def reorder(results: list[dict], scores: dict, candidates: int = CANDIDATES) -> list[dict]:
    """Geometric matches (at least MIN_INLIERS inliers) first, most inliers first (ties:
    nearest first), then the other candidates and the rest in their original order."""
    head, tail = [dict(r) for r in results[:candidates]], results[candidates:]
    for result in head:
        result["inliers"] = scores.get(result["pk"], 0)
    matched = sorted((r for r in head if r["inliers"] >= MIN_INLIERS),
                     key=lambda r: -r["inliers"])
    rest = [r for r in head if r["inliers"] < MIN_INLIERS]
    return matched + rest + tail
