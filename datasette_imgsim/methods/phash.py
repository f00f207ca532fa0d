"""64-bit DCT perceptual hash, compared by Hamming distance."""
from __future__ import annotations

import cv2
import numpy as np

from .base import Features, Method


def perceptual_hash(rgb: np.ndarray) -> np.ndarray:
    """The classic pHash: 32x32 grey, DCT, the 8x8 lowest frequencies against their median."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    small = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8].ravel()
    return np.packbits(low > np.median(low))


def extract(images) -> Features:
    return Features(np.stack([perceptual_hash(rgb) for rgb in images]))


def phash_method():
    return Method(
        name="phash",
        dims=64,
        element_type="bit",
        metric="hamming",
        extract=extract,
        min_size=64,
        # bench/accuracy.py --calibrate: the largest distance that keeps unrelated
        # pictures and most similar shots out.
        duplicate_threshold=10.0,
        copy_threshold=10.0,
        # bench/duplicates_accuracy.py: greyscale and caption copies lie up to ~20 bits away.
        candidate_threshold=22.0,
        exact_distance=0.0,
        default_priority=20,
        description="64-bit DCT perceptual hash; Hamming distance (near-duplicates)",
    )
