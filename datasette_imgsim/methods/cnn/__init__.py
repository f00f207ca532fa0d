"""The "cnn" method: EfficientNet-Lite0 ImageNet embeddings and top-5 labels.

data/imagenet_labels.txt holds the 1000 ImageNet-1k class names in class-index
order: for each synset in timm's timm/data/_info/imagenet_synsets.txt, the
first lemma in timm/data/_info/imagenet_synset_to_lemma.txt (timm 1.0.31 from
PyPI, Apache-2.0, derived from WordNet). The three classes whose first lemma is
ambiguous are named "crane (bird)" (134), "crane (machine)" (517) and
"tank suit" (639).
"""
from __future__ import annotations

import functools
import os
from typing import Sequence

import numpy as np

from ..base import Features, Method

TOP_K = 5
LABELS_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "data", "imagenet_labels.txt")


@functools.lru_cache(maxsize=1)
def imagenet_labels() -> tuple[str, ...]:
    with open(LABELS_PATH, encoding="utf-8") as f:
        labels = tuple(line.strip() for line in f if line.strip())
    if len(labels) != 1000:
        raise ValueError(f"{LABELS_PATH} should list 1000 classes, not {len(labels)}")
    return labels


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def top_labels(logits: np.ndarray, k: int = TOP_K) -> list[list[tuple[str, float]]]:
    """For each row of logits, the k most probable (label, probability), best first."""
    labels = imagenet_labels()
    probabilities = softmax(logits.astype(np.float64))
    best = np.argsort(-probabilities, axis=1)[:, :k]
    return [
        [(labels[i], float(row[i])) for i in indices]
        for row, indices in zip(probabilities, best)
    ]


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


# Embedding versions (issue #17). An index records the version it was built with, and
# queries against it must embed with the same one (extract_version(version)).
#   1: the central 224/256 square of the shorter side, average-pooled (EfficientNet's
#      classification crop): blind to 44 % of a 16:9 photo.
#   2: uniform borders trimmed; the whole picture padded to a square at 160 px, lightly
#      blurred, plus version 1's sharp centre crop at 224 px; each GeM-pooled (p=3),
#      L2-normalised, summed 1.5 : 1 (runtime.views_v2 / run_v2). Labels still come
#      from the sharp centre crop. bench/copydetect_hard.py measures both.
EMBEDDING_VERSION = 2
EMBEDDING_VERSIONS = (1, 2)


def extract_v1(images: Sequence[np.ndarray]) -> Features:
    """Embedding version 1, exactly as before version 2 existed (old indexes)."""
    from .runtime import get_model

    embeddings, logits = get_model().run(images)
    return Features(vectors=l2_normalise(embeddings), labels=top_labels(logits))


def extract_v2(images: Sequence[np.ndarray]) -> Features:
    """Embedding version 2: sees the whole picture (wide, tall and bordered photos)."""
    from .runtime import get_model

    embeddings, logits = get_model().run_v2(images)
    return Features(vectors=embeddings, labels=top_labels(logits))


_EXTRACTS = {1: extract_v1, 2: extract_v2}


def extract_version(version: int):
    """The extract function of an embedding version (module-level, so it pickles)."""
    try:
        return _EXTRACTS[int(version)]
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"cnn: unknown embedding version {version!r} "
                         f"(this release knows {', '.join(map(str, EMBEDDING_VERSIONS))})") from None


def embed(images: Sequence[np.ndarray], version: int = EMBEDDING_VERSION) -> np.ndarray:
    """Unit-length float32 vectors (n, 1280) of images with the given embedding version."""
    return extract_version(version)(images).vectors


def extract(images: Sequence[np.ndarray]) -> Features:
    """The current embedding version's features. Module-level (so a Method holding it
    pickles by reference); the model is built on first call in each process."""
    return extract_v2(images)


def cnn_method() -> Method:
    method = Method(
        name="cnn",
        dims=1280,
        element_type="float",
        metric="cosine",
        extract=extract,
        # The network sees the central 224/256 of the shorter side at 224 px (and the
        # whole picture at 160 px), so a shorter side of 256 loses nothing
        # (images.open_image's reduced decode keeps the shorter side at least min_size).
        min_size=256,
        batch_size=16,
        duplicate_threshold=0.05,
        copy_threshold=0.05,
        # bench/duplicates_accuracy.py: a screenshot (the photo on 40-70 % of the frame)
        # lies up to ~0.4 from its original (a 64 % crop ~0.2).
        candidate_threshold=0.40,
        exact_distance=0.005,
        # What the photo shows: the best single answer to "which images look like this?".
        default_priority=100,
        description=(
            "EfficientNet-Lite0 (ImageNet) embedding of the whole picture and its "
            "centre: what the photo shows, robust to cropping, borders, colour and "
            "heavy edits; also stores the top-5 ImageNet labels."
        ),
        version=EMBEDDING_VERSION,
        # Indexes built with version 1 (the centre crop) keep being queried with it.
        extract_for=extract_version,
    )
    return method
