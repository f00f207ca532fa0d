"""Sign-bit codes of float vectors (SimHash over random hyperplanes): pure numpy.

The vec0 backend keeps one code per vector in a bit table and pre-filters KNN candidates
by Hamming distance before an exact float re-rank.
"""
from __future__ import annotations

import base64
import functools
import math

import numpy as np

# Random hyperplanes per dimension. Two raise recall@10 from 220 candidates at 1M
# rows only from 0.994 to 0.997 but double the scan, so one.
BITS_PER_DIM = 1
# Sign bits are taken around an origin between 0 and the collection's mean: the
# CENTRINGS fraction of the mean that finds the most exact neighbours of a sample of
# the collection (see choose_centring). Around 0, non-negative vectors (CNN after
# ReLU6, HOG, histograms) sit on the same side of most hyperplanes and the bits say
# little. Around the mean the bits are informative but Hamming distance estimates the
# angle between mean-centred vectors, blind to their length: rows near the mean
# (low-contrast crops' HOG) are near everything yet far in Hamming. Half the mean
# raised recall@10 on 12k HOG vectors of photo crops from 0.92 to 0.996, but on 1M
# clustered CNN embeddings lowered it from 0.996 to 0.991, hence the choice per index.
CENTRINGS = (1.0, 0.5)  # preferred first: a later one must find clearly more
CENTRING_MARGIN = 0.005
CENTRING_SAMPLE = 4096
CENTRING_QUERIES = 200


def quantized_bits(dims: int) -> int:
    """Sign bits kept for a float vector: dims rounded up to whole 64-bit words,
    which sqlite-vec compares with one popcount each."""
    return math.ceil(dims / 64) * 64


@functools.lru_cache(maxsize=8)
def projection(dims: int, bits: int, seed: int) -> np.ndarray:
    """A (dims, bits) matrix of Gaussian random hyperplanes (SimHash), the same for
    the same seed on every machine: the normals come from PCG64's raw output (a stable
    stream) by Box-Muller, not from a numpy sampler whose algorithm may change.
    Made in blocks of the stream: whole-matrix temporaries took 0.5 s for HOG's size."""
    generator = np.random.PCG64(seed)
    normals = np.empty(dims * bits, np.float32)
    block = 1 << 18
    for start in range(0, dims * bits, block):
        n = min(block, dims * bits - start)
        raw = generator.random_raw(2 * n)
        uniform = ((raw >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0**53
        normals[start:start + n] = np.sqrt(-2 * np.log(uniform[0::2])) * np.cos(2 * np.pi * uniform[1::2])
    return normals.reshape(dims, bits)


def for_signs(vectors: np.ndarray, metric: str) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    if metric == "cosine":
        # Cosine ignores length: quantize directions, not magnitudes.
        norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)
    return vectors


def sign_bits(vectors: np.ndarray, quantized: dict, metric: str) -> np.ndarray:
    """Packed bits of an index's vectors: on which side of each random hyperplane
    through the origin of the codes each vector lies (one row of quantized["bits"]
    bits per vector); that origin is quantized["centring"] (see CENTRINGS; indexes
    made before it was stored used 1) times the collection's mean.

    Hamming distance between such codes estimates the angle between the vectors as
    seen from that origin (SimHash), which ranks like the float metric. Random
    hyperplanes rather than the coordinate axes: on real CNN embeddings recall@10 from
    40 candidates rises from 0.97 to 0.99 (bench/query_speed.py), because no single
    sparse dimension decides a bit."""
    vectors = np.atleast_2d(for_signs(vectors, metric))
    origin = quantized.get("centring", 1.0) * decode_mean(quantized["mean"])
    planes = projection(vectors.shape[1], quantized["bits"], quantized.get("seed", 0))
    if len(vectors) == 1:
        # A query: einsum's own loop (0.2 ms) rather than multi-threaded BLAS, whose
        # threads wake up slowly on a busy server (8 ms for this one product).
        projected = np.einsum("ij,jk->ik", vectors - origin, planes)
    else:
        projected = (vectors - origin) @ planes
    return np.packbits(projected > 0, axis=1)


_BYTE_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcount(packed: np.ndarray) -> np.ndarray:
    return np.bitwise_count(packed) if hasattr(np, "bitwise_count") else _BYTE_POPCOUNT[packed]


def choose_centring(vectors: np.ndarray, mean: np.ndarray, planes: np.ndarray, metric: str) -> float:
    """Of CENTRINGS, the origin (as a fraction of the mean) whose sign bits put most of
    a sample's exact 10 nearest neighbours among each query's nearest 1/64 by Hamming
    distance; the first one unless another finds CENTRING_MARGIN more. Cosine indexes
    are judged by cosine, l2 and l1 ones by Euclidean distance."""
    rng = np.random.default_rng(0)
    if len(vectors) > CENTRING_SAMPLE:
        vectors = vectors[rng.choice(len(vectors), CENTRING_SAMPLE, replace=False)]
    sample = for_signs(vectors, metric)
    n = len(sample)
    if n < 64:
        return CENTRINGS[0]
    queries = rng.choice(n, min(CENTRING_QUERIES, n), replace=False)
    squares = (sample * sample).sum(axis=1)
    distance = squares[:, None] - 2 * sample @ sample[queries].T  # + |q|^2: same ranking
    distance[queries, np.arange(len(queries))] = np.inf
    nearest = np.argpartition(distance, 10, axis=0)[:10].T
    shortlist = max(20, n // 64)
    projected = sample @ planes
    shift = mean @ planes
    found = []
    for centring in CENTRINGS:
        codes = np.packbits(projected - centring * shift > 0, axis=1)
        hits = 0
        for query, true in zip(queries, nearest):
            hamming = _popcount(codes ^ codes[query]).sum(axis=1, dtype=np.int64)
            hamming[query] = hamming.max() + 1
            hits += np.isin(true, np.argpartition(hamming, shortlist)[:shortlist]).sum()
        found.append(hits / nearest.size)
    best = max(range(len(CENTRINGS)), key=found.__getitem__)
    return CENTRINGS[best] if found[best] > found[0] + CENTRING_MARGIN else CENTRINGS[0]


def encode_mean(mean: np.ndarray) -> str:
    return base64.b64encode(np.asarray(mean, dtype="<f4").tobytes()).decode("ascii")


def decode_mean(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4")
