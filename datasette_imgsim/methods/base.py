"""The contract every feature method fulfils, built-in or from another package."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

FLOAT_METRICS = ("cosine", "l2", "l1")

# Set in indexing worker processes (one per core) so that methods with their own
# thread pools (the cnn runtime) use one thread each instead of oversubscribing.
threads_per_process: Optional[int] = None


@dataclass
class Features:
    """What a method returns for a batch of images.

    vectors: float32 array (n, dims) for float methods, uint8 array (n, dims // 8)
    of packed bits for bit methods.
    labels: optionally, for each image, a list of (label, probability) pairs,
    best first (the cnn method's ImageNet top-5).
    """

    vectors: np.ndarray
    labels: Optional[list[list[tuple[str, float]]]] = None


@dataclass
class Method:
    """A feature method.

    extract receives a list of RGB uint8 arrays (H, W, 3), each decoded at
    reduced size but with its shorter side at least ``min_size`` pixels where
    the source allows (smaller images are passed as they are), and returns
    Features for the whole batch, in order.

    element_type is "float" or "bit"; metric is the default distance metric
    ("cosine", "l2" or "l1" for float methods, "hamming" for bit methods).
    prepare(vectors, metric), if given, turns extracted vectors into the ones
    stored for that metric, so that sqlite-vec's ranking under that metric is
    the comparison the method intends (e.g. histogram: mean-centred for
    cosine = correlation, square roots for l2 = Hellinger).
    """

    name: str
    dims: int
    element_type: str
    metric: str
    extract: Callable[[Sequence[np.ndarray]], Features]
    min_size: int = 256
    batch_size: int = 1
    description: str = ""
    prepare: Optional[Callable[[np.ndarray, str], np.ndarray]] = None
    metrics: tuple[str, ...] = field(default=())
    # Near-duplicates (duplicates.py): the default largest distance between members of a
    # group, the largest still called an edited copy, and the distance at or under which
    # two images are the same picture only a re-encode apart. None: FALLBACK_THRESHOLD.
    duplicate_threshold: Optional[float] = None
    copy_threshold: Optional[float] = None
    # The generous bound under which a pair becomes a candidate for verification
    # (verify.py decides it): loose enough for crops, mirrors and screenshots. None: the
    # method proposes no candidates when another index of the table does.
    candidate_threshold: Optional[float] = None
    exact_distance: float = 0.0
    # Which index a table's queries use when none is named: the highest priority built.
    default_priority: int = 0
    # Bumped when the vectors a method extracts change, so an index records what it holds
    # (params["embedding_version"]); extract_for(version) gives the extract function of an
    # older version, so indexes built with it keep being queried and updated the same way.
    version: int = 1
    extract_for: Optional[Callable[[int], Callable]] = None

    def __post_init__(self):
        if self.element_type not in ("float", "bit"):
            raise ValueError(f"element_type must be 'float' or 'bit', not {self.element_type!r}")
        if self.element_type == "bit":
            if self.dims % 8:
                raise ValueError("bit methods need dims divisible by 8")
            self.metrics = ("hamming",)
            self.metric = "hamming"
        elif not self.metrics:
            self.metrics = FLOAT_METRICS
        if self.metric not in self.metrics:
            raise ValueError(f"{self.name}: default metric {self.metric!r} not in {self.metrics}")

    def extractor(self, version: Optional[int] = None) -> Callable:
        """The extract function of an embedding version (None: an index made before
        versions were recorded, i.e. version 1)."""
        wanted = 1 if version is None else int(version)
        if wanted == self.version:
            return self.extract
        if self.extract_for is None:
            raise ValueError(f"{self.name}: index built with embedding version {wanted}; "
                             f"this release has version {self.version}")
        return self.extract_for(wanted)

    def vectors_for(self, vectors: np.ndarray, metric: str) -> np.ndarray:
        """Extracted vectors as they are stored and queried under metric."""
        if self.prepare is not None:
            vectors = self.prepare(vectors, metric)
        if self.element_type != "float":
            return np.ascontiguousarray(vectors, dtype=np.uint8)
        vectors = np.array(vectors, dtype=np.float32, ndmin=2)
        if metric == "cosine":
            # Cosine is undefined for an all-zero vector (HOG of a flat image): sqlite-vec
            # returns a NULL distance. A negative constant vector instead matches other
            # flat images exactly and is no nearer to any real (non-negative or
            # mean-centred) vector than cosine distance 1.
            flat = ~np.any(vectors, axis=1)
            vectors[flat] = -1.0 / np.sqrt(vectors.shape[1])
        return vectors
