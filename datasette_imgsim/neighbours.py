"""Pairs of near vectors without an all-pairs matrix, and the groups they join into.

Up to EXACT_LIMIT vectors, pairs come from an exact blockwise scan (BLOCK rows at a time).
Above it, float vectors are partitioned into cells with a small spherical k-means, each
vector joins its PROBES nearest cells, and pairs are searched within cells only (an
inverted-file search, as FAISS's IVF): near duplicates sit in the same cell, so this finds
them in seconds at 100k images. Bit vectors (phash) stay exact at any size: Hamming
distance of 64-bit hashes is a 64-wide matrix product of +/-1 vectors, which BLAS runs
fast enough.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

DEFAULT_NEIGHBOURS = 20  # each image links to at most this many of its nearest neighbours
EXACT_LIMIT = 20_000
BLOCK = 256  # rows per block: a 256 x 100k block of float32 is 100 MB
PROBES = 3
MARGIN = 0.1


def prepared(matrix: np.ndarray, metric: str) -> np.ndarray:
    """Vectors in the form the distance functions below take: unit rows for cosine,
    +/-1 floats for Hamming, float32 otherwise."""
    if metric == "hamming":
        return np.unpackbits(matrix, axis=1).astype(np.float32) * 2 - 1
    matrix = np.asarray(matrix, np.float32)
    if metric == "cosine":
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        return matrix / np.maximum(norms, 1e-12)
    return matrix


def distances(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    """Distances between the rows of a and b (both from prepared()), as sqlite-vec gives them."""
    if metric == "cosine":
        return 1.0 - a @ b.T
    if metric == "hamming":
        return (a.shape[1] - a @ b.T) / 2.0
    if metric == "l2":
        squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
        return np.sqrt(np.maximum(squared, 0.0))
    if metric == "l1":
        out = np.empty((len(a), len(b)), np.float32)
        for start in range(0, len(a), 64):
            out[start:start + 64] = np.abs(a[start:start + 64, None, :] - b[None, :, :]).sum(2)
        return out
    raise ValueError(f"unknown metric {metric!r}")


def _close(a: np.ndarray, b: np.ndarray, rows: np.ndarray, cols: np.ndarray, metric: str,
           threshold: float, k: int) -> Iterator[tuple[int, int, float]]:
    """(row, col, distance) for each row's at most k nearest columns within threshold."""
    # A small tolerance: float32 products put an exact copy at about 1e-7, not 0.
    limit = threshold + 1e-6
    if metric in ("cosine", "hamming"):
        # Compare the dot products themselves: no distance matrix, one temporary less.
        dots = a @ b.T
        cut = 1.0 - limit if metric == "cosine" else a.shape[1] - 2.0 * limit
        hits_r, hits_c = np.nonzero(dots >= cut)
        to_distance = ((lambda x: 1.0 - x) if metric == "cosine"
                       else (lambda x: (a.shape[1] - x) / 2.0))
        block = None
    else:
        block = distances(a, b, metric)
        hits_r, hits_c = np.nonzero(block <= limit)
    if not len(hits_r):
        return
    found = to_distance(dots[hits_r, hits_c]) if block is None else block[hits_r, hits_c]
    counts = np.bincount(hits_r, minlength=len(rows))
    crowded = counts > k
    for r, c, d in zip(hits_r.tolist(), hits_c.tolist(), found.tolist()):
        if not crowded[r] and rows[r] != cols[c]:
            yield int(rows[r]), int(cols[c]), float(d)
    for r in np.flatnonzero(crowded).tolist():
        row = to_distance(dots[r]) if block is None else block[r]
        for c in np.argpartition(row, k)[:k + 1].tolist():
            if rows[r] != cols[c] and row[c] <= limit:
                yield int(rows[r]), int(cols[c]), float(row[c])


def neighbour_pairs(vectors: np.ndarray, metric: str, threshold: float,
                    k: int = DEFAULT_NEIGHBOURS, exact_limit: int = EXACT_LIMIT,
                    seed: int = 0) -> Iterator[tuple[int, int, float]]:
    """(i, j, distance) linking each vector to its nearest neighbours within threshold.

    vectors come from prepared(). Exact up to exact_limit vectors (and always for
    Hamming); above that, float vectors are searched within k-means cells.
    """
    n = len(vectors)
    everything = np.arange(n)
    if n <= exact_limit or metric == "hamming":
        for start in range(0, n, BLOCK):
            # Only columns from start on: each pair is seen once (upper triangle).
            rows = everything[start:start + BLOCK]
            cols = everything[start:]
            yield from _close(vectors[start:start + BLOCK], vectors[start:], rows, cols,
                              metric, threshold, k)
        return
    for members in cells(vectors, metric, seed):
        for start in range(0, len(members), BLOCK):
            rows = members[start:start + BLOCK]
            cols = members[start:]
            yield from _close(vectors[rows], vectors[cols], rows, cols, metric, threshold, k)


def cells(vectors: np.ndarray, metric: str, seed: int = 0, probes: int = PROBES,
          iterations: int = 8, depth: int = 0) -> list[np.ndarray]:
    """Overlapping partitions of the rows: k-means (on a sample) with sqrt(n) centres,
    each row placed in its `probes` nearest cells."""
    original = vectors
    n = len(vectors)
    count = max(2, int(np.sqrt(n)))
    rng = np.random.default_rng(seed)
    # Centred: embeddings share a large common direction (cnn vectors are non-negative),
    # which otherwise makes k-means put most vectors in one cell.
    vectors = vectors - vectors[rng.choice(n, size=min(n, 10_000), replace=False)].mean(0)
    sample = vectors[rng.choice(n, size=min(n, count * 40), replace=False)]
    centres = sample[rng.choice(len(sample), size=count, replace=False)].copy()
    for _ in range(iterations):
        nearest = _nearest_centres(sample, centres, metric, 1)[:, 0]
        for c in range(count):
            chosen = sample[nearest == c]
            if len(chosen):
                centres[c] = chosen.mean(0)
    cell_rows, cell_ids = [], []
    for start in range(0, n, 8192):
        chunk = vectors[start:start + 8192]
        d = (centres * centres).sum(1)[None, :] - 2.0 * (chunk @ centres.T)
        d += (chunk * chunk).sum(1)[:, None]
        nearest = np.argpartition(d, probes, axis=1)[:, :probes]
        near_d = np.take_along_axis(d, nearest, 1)
        order = np.argsort(near_d, axis=1)
        nearest = np.take_along_axis(nearest, order, 1)
        near_d = np.take_along_axis(near_d, order, 1)
        # A row also joins its next cells only when it lies near their border (within
        # MARGIN of its own cell's squared distance): where a copy could be across it.
        keep = near_d <= near_d[:, :1] * (1 + MARGIN)
        r, c = np.nonzero(keep)
        cell_rows.append(r + start)
        cell_ids.append(nearest[r, c])
    rows, ids = np.concatenate(cell_rows), np.concatenate(cell_ids)
    order = np.argsort(ids, kind="stable")
    bounds = np.searchsorted(ids[order], np.arange(count + 1))
    found = [np.sort(rows[order[a:b]]) for a, b in zip(bounds[:-1], bounds[1:]) if b - a > 1]
    # k-means leaves some cells far larger than the rest, and the cost of a cell grows
    # with the square of its size: split those again, on their own.
    out = []
    for members in found:
        if len(members) > max(4 * n // count, 2000) and len(members) < n and depth < 3:
            out.extend(members[sub] for sub in cells(original[members], metric, seed + 1,
                                                      probes, iterations, depth + 1))
        else:
            out.append(members)
    return out


def _nearest_centres(vectors, centres, metric, probes):
    # Cells are drawn with l2 on the centred vectors.
    d = (centres * centres).sum(1)[None, :] - 2.0 * (vectors @ centres.T)
    return d.argmin(1)[:, None]


def connected_groups(n: int, pairs) -> list[list[int]]:
    """Connected components (of two or more) of the graph on range(n) with these edges:
    pairs are (i, j, ...) tuples or an (m, 2+) integer array. Each component's members
    ascending, components in the order of their smallest member."""
    if isinstance(pairs, np.ndarray):
        edges = pairs[:, :2].astype(np.int64)
    else:
        edges = np.array([(p[0], p[1]) for p in pairs], dtype=np.int64).reshape(-1, 2)
    label = component_labels(n, edges[:, 0], edges[:, 1])
    counts = np.bincount(label, minlength=n)
    grouped = np.flatnonzero(counts[label] > 1)
    if not len(grouped):
        return []
    # Stable on positions already ascending: members stay in order within a component.
    members = grouped[np.argsort(label[grouped], kind="stable")]
    bounds = np.flatnonzero(np.diff(label[members])) + 1
    return [part.tolist() for part in np.split(members, bounds)]


def component_labels(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Each of range(n)'s component, named by its smallest member, for edges a[e]-b[e].

    Union-find in whole-array steps (hook every edge's larger root under the smaller,
    then halve paths until every node points at a root): millions of edges in a second
    where a Python loop takes a minute. Labels only ever decrease, so it terminates."""
    label = np.arange(n, dtype=np.int64)
    if not len(a):
        return label
    while True:
        la, lb = label[a], label[b]
        apart = la != lb
        if not apart.any():
            return label
        la, lb = la[apart], lb[apart]
        low = np.minimum(la, lb)
        np.minimum.at(label, la, low)
        np.minimum.at(label, lb, low)
        while True:
            jumped = label[label]
            if np.array_equal(jumped, label):
                break
            label = jumped
        a, b = a[apart], b[apart]
