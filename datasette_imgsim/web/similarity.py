"""Distances as words a person reads: "near-identical", "same scene", "related", "unrelated".

Each method's bounds start from its own `duplicate_threshold` (plugins.get_method(name),
calibrated by bench/accuracy.py --calibrate on edited copies; README "Default
thresholds"). BANDS below are the web layer's, measured on demo.db (64 photos, 14 honest
variants: crops, rotations, greyscale, re-encodes, a mirror, a colour edit, burst frames):
its variants' distances to their originals against each photo's nearest unrelated one.
- phash (Hamming bits of 64): copies 0-6, unrelated 18-28 -> 10 / 14 / 16.
- hog: copies 0-0.026, unrelated from 0.116 -> 0.05 / 0.08 / 0.10.
- cnn: re-encodes, greyscale, mirror, burst 0.02-0.14, crops 0.16-0.25, unrelated from
  0.33 (mostly 0.49 and up) -> 0.12 / 0.30 / 0.45.
- histogram: re-encodes and bursts 0-0.074, unrelated from 0.09 -> 0.01 / 0.08 / 0.15
  (colour alone: "same scene" means "same colours").
The near-identical bound is never below the method's duplicate_threshold. A method without
an entry (a plugin's) gets its duplicate threshold, and that times 2 and 4.
"""
from __future__ import annotations

from typing import Optional

BANDS = {  # method: (near-identical, same scene, related) upper bounds
    "phash": (10.0, 14.0, 16.0),
    "hog": (0.05, 0.08, 0.10),
    "cnn": (0.12, 0.30, 0.45),
    "histogram": (0.01, 0.08, 0.15),
}
FALLBACK_THRESHOLD = 0.05
LEVELS = ("near-identical", "same scene", "related", "unrelated")


def thresholds(method: str) -> tuple[float, float, float]:
    """(near-identical, same scene, related) upper bounds of a method's distances."""
    try:
        from ..plugins import get_method

        found = get_method(method)
        duplicate = found.duplicate_threshold
    except Exception:
        duplicate = None
    if duplicate is None:
        duplicate = FALLBACK_THRESHOLD
    near, scene, related = BANDS.get(method, (duplicate, duplicate * 2, duplicate * 4))
    near = max(near, duplicate)
    return float(near), float(max(scene, near)), float(max(related, scene, near))


def level(method: str, distance: Optional[float], inliers: Optional[int] = None) -> str:
    """The band a distance falls in; re-ranked results with many matched features are the
    same photo whatever the global distance says."""
    if inliers is not None and inliers >= 25:
        return LEVELS[0]
    if distance is None:
        return LEVELS[3]
    for name, bound in zip(LEVELS, thresholds(method)):
        if distance <= bound + 1e-9:
            return name
    return LEVELS[3]


def annotate(method: str, items: list[dict]) -> list[dict]:
    """Each item gets "similarity" (its band) and "divider" (the first unrelated one)."""
    divided = False
    for item in items:
        item["similarity"] = level(method, item.get("distance"), item.get("inliers"))
        item["divider"] = item["similarity"] == "unrelated" and not divided
        divided = divided or item["divider"]
    return items
