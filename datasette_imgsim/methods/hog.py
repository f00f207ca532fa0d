"""Histogram of Oriented Gradients of a fixed-size grey resize."""
from __future__ import annotations

import cv2
import numpy as np

from .base import Features, Method

WINDOW = 64
_descriptor = None


def hog_descriptor() -> "cv2.HOGDescriptor":
    global _descriptor
    if _descriptor is None:
        # 16 px blocks of 2x2 cells of 8 px, 9 orientation bins: 7 x 7 blocks x 36.
        _descriptor = cv2.HOGDescriptor((WINDOW, WINDOW), (16, 16), (8, 8), (8, 8), 9)
    return _descriptor


def hog_vector(rgb: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    small = cv2.resize(grey, (WINDOW, WINDOW), interpolation=cv2.INTER_AREA)
    return hog_descriptor().compute(small).ravel()


def extract(images) -> Features:
    return Features(np.stack([hog_vector(rgb) for rgb in images]).astype(np.float32))


def hog_method():
    return Method(
        name="hog",
        dims=hog_descriptor().getDescriptorSize(),
        element_type="float",
        metric="cosine",
        extract=extract,
        min_size=128,
        duplicate_threshold=0.05,
        copy_threshold=0.05,
        exact_distance=0.002,
        default_priority=15,
        description="HOG of a 64x64 grey resize (shape and edges, ignores colour)",
    )
