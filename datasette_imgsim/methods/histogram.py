"""Colour histogram, as OpenCV's calcHist + compareHist."""
from __future__ import annotations

import cv2
import numpy as np

from .base import Features, Method

BINS = 8  # per channel: 8 x 8 x 8 = 512 colour bins


def colour_histogram(rgb: np.ndarray) -> np.ndarray:
    """An RGB 3-D histogram, flattened and normalised to sum 1."""
    hist = cv2.calcHist([rgb], [0, 1, 2], None, [BINS] * 3, [0, 256] * 3).ravel()
    return hist / max(float(hist.sum()), 1.0)


def prepare(vectors: np.ndarray, metric: str) -> np.ndarray:
    if metric == "cosine":
        # Cosine of mean-centred histograms is their Pearson correlation,
        # i.e. compareHist(HISTCMP_CORREL).
        return vectors - vectors.mean(axis=1, keepdims=True)
    if metric == "l2":
        # Euclidean distance between square-rooted distributions ranks as the
        # Hellinger distance, i.e. compareHist(HISTCMP_HELLINGER).
        return np.sqrt(vectors)
    return vectors  # l1: Manhattan distance between the distributions


def extract(images) -> Features:
    return Features(np.stack([colour_histogram(rgb) for rgb in images]).astype(np.float32))


def histogram_method():
    return Method(
        name="histogram",
        dims=BINS**3,
        element_type="float",
        metric="cosine",
        extract=extract,
        min_size=128,
        batch_size=1,
        duplicate_threshold=0.005,
        copy_threshold=0.005,
        exact_distance=0.0005,
        default_priority=10,
        prepare=prepare,
        description="RGB colour histogram (8x8x8 bins); cosine = correlation, l2 = Hellinger",
    )
