"""Near-duplicate groups: each image's nearest neighbours under a threshold, joined into
connected groups with union-find.

The work is a sequence of pure steps over one index's vectors:

    load_vectors (store) -> neighbour_pairs (numpy) -> connected_groups (union-find)
    -> describe (file sizes, dimensions, distance to each group's best copy)

No all-pairs matrix is ever held. Up to EXACT_LIMIT vectors, pairs come from an exact
blockwise scan (BLOCK rows at a time). Above it, float vectors are partitioned into
cells with a small spherical k-means, each vector joins its PROBES nearest cells, and
pairs are searched within cells only (an inverted-file search, as FAISS's IVF): near
duplicates sit in the same cell, so this finds them in seconds at 100k images.
Bit vectors (phash) stay exact at any size: Hamming distance of 64-bit hashes is a
64-wide matrix product of +/-1 vectors, which BLAS runs fast enough.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import numpy as np

from .images import ImageError, image_size, resolve_path
from .source import image_value
from .store import IndexSpec, NotFound, Store, quote_identifier

# Per method: (default threshold, largest distance still called an edited copy).
# Calibrated with bench/accuracy.py --calibrate on real photos: each default keeps
# unrelated pictures out and as few similar shots (another frame of the same scene)
# as the method allows, so those are grouped only when a larger threshold asks for
# them; the figures are in docs/readme-duplicates.md.
THRESHOLDS = {
    "phash": (10.0, 10.0),
    "cnn": (0.05, 0.05),
    "hog": (0.05, 0.05),
    "histogram": (0.005, 0.005),
}
# Distances at or under this are the same picture (only a re-encode apart).
EXACT = {"phash": 0.0, "cnn": 0.005, "hog": 0.002, "histogram": 0.0005}
FALLBACK_THRESHOLD = 0.05

DEFAULT_NEIGHBOURS = 20  # each image links to at most this many of its nearest neighbours
EXACT_LIMIT = 20_000
BLOCK = 256  # rows per block: a 256 x 100k block of float32 is 100 MB
PROBES = 3
MARGIN = 0.1


class DuplicatesError(ValueError):
    """A bad threshold or neighbour count; the message is for the user."""


def default_threshold(method: str) -> float:
    return THRESHOLDS.get(method, (FALLBACK_THRESHOLD,))[0]


def copy_threshold(method: str) -> float:
    return THRESHOLDS.get(method, (None, FALLBACK_THRESHOLD))[1]


def parse_threshold(value: Any, method: str) -> float:
    if value is None or value == "":
        return default_threshold(method)
    try:
        threshold = float(value)
    except (TypeError, ValueError):
        raise DuplicatesError(f"threshold must be a number, not {value!r}") from None
    if not threshold >= 0 or threshold == float("inf"):
        raise DuplicatesError(f"threshold must be zero or more, not {value!r}")
    return threshold


# --- vectors -----------------------------------------------------------------------


def load_vectors(store: Store, spec: IndexSpec) -> tuple[list, np.ndarray]:
    """Every indexed row's pk and vector: (pks, float32 matrix (n, dims) or uint8 (n, dims/8))."""
    rows = store.conn.execute(
        f"select it.pk, v.embedding from {quote_identifier(spec.vec_table)} v "
        f"join _imgsim_items it on it.item_id = v.rowid order by it.item_id"
    ).fetchall()
    pks = [pk for pk, _ in rows]
    blob = b"".join(embedding for _, embedding in rows)
    if spec.element_type == "bit":
        matrix = np.frombuffer(blob, np.uint8).reshape(len(rows), spec.dims // 8)
    else:
        matrix = np.frombuffer(blob, np.float32).reshape(len(rows), spec.dims)
    return pks, matrix


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


# --- neighbours --------------------------------------------------------------------


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
    """Connected components (of two or more) of the graph on range(n) with these edges."""
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j, *_ in pairs:
        a, b = find(i), find(j)
        if a != b:
            parent[max(a, b)] = min(a, b)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return [g for g in groups.values() if len(g) > 1]


# --- groups with their facts ---------------------------------------------------------


@dataclass
class Member:
    pk: Any
    distance: float  # to the group's best copy
    kind: str  # "best copy", "exact copy", "edited copy" or "similar shot"
    image: Any = None  # the path as stored, or None for a BLOB
    size: Optional[int] = None  # bytes
    width: Optional[int] = None
    height: Optional[int] = None

    def to_dict(self) -> dict:
        return {"pk": self.pk, "distance": round(self.distance, 6), "kind": self.kind,
                "image": self.image, "size": self.size, "width": self.width,
                "height": self.height}


@dataclass
class Group:
    members: list[Member] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"members": [m.to_dict() for m in self.members]}


@dataclass
class Duplicates:
    method: str
    metric: str
    threshold: float
    indexed: int
    groups: list[Group]
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"method": self.method, "metric": self.metric, "threshold": self.threshold,
                "indexed": self.indexed, "groups": [g.to_dict() for g in self.groups]}


def find_duplicates(store: Store, spec: IndexSpec, threshold: Any = None,
                    k: int = DEFAULT_NEIGHBOURS, describe: bool = True,
                    exact_limit: int = EXACT_LIMIT) -> Duplicates:
    """The index's near-duplicate groups, largest first, each member with its facts;
    describe=False skips reading files (sizes and dimensions stay None)."""
    import time

    started = time.monotonic()
    threshold = parse_threshold(threshold, spec.method)
    if k < 1:
        raise DuplicatesError("neighbours must be at least 1")
    pks, raw = load_vectors(store, spec)
    vectors = prepared(raw, spec.metric)
    pairs = list(neighbour_pairs(vectors, spec.metric, threshold, k, exact_limit))
    components = connected_groups(len(pks), pairs)
    facts = _row_facts(store, spec, [pks[i] for c in components for i in c]) if describe else {}
    groups = []
    for component in components:
        groups.append(_group(spec, component, pks, vectors, facts))
    groups.sort(key=lambda g: (-len(g.members), str(g.members[0].pk)))
    return Duplicates(spec.method, spec.metric, threshold, len(pks), groups,
                      time.monotonic() - started)


def _group(spec, component, pks, vectors, facts) -> Group:
    def quality(i):
        size, width, height = facts.get(pks[i], (None, None, None, None))[1:]
        return ((width or 0) * (height or 0), size or 0)

    # The best copy: the most pixels, then the largest file (least compressed), then
    # the row indexed first.
    best = max(sorted(component), key=quality)
    d = distances(vectors[[best]], vectors[component], spec.metric)[0]
    members = []
    for i, distance in zip(component, d.tolist()):
        image, size, width, height = facts.get(pks[i], (None, None, None, None))
        # float32 rounding leaves identical vectors ~1e-7 apart.
        distance = 0.0 if i == best or distance < 1e-5 else distance
        members.append(Member(pks[i], distance, classify(spec.method, distance, i == best,
                                                         quality(i) == quality(best)),
                              image, size, width, height))
    members.sort(key=lambda m: (m.kind != "best copy", m.distance, str(m.pk)))
    return Group(members)


def classify(method: str, distance: float, is_best: bool = False, same_size: bool = True) -> str:
    """What a member is to its group's best copy, judged by distance alone."""
    if is_best:
        return "best copy"
    if distance <= EXACT.get(method, 0.0) + 1e-6 and same_size:
        return "exact copy"
    if distance <= copy_threshold(method) + 1e-6:
        return "edited copy"
    return "similar shot"


def _row_facts(store: Store, spec: IndexSpec, pks: list) -> dict:
    """pk -> (image value, bytes, width, height), from the file or BLOB."""
    facts = {}
    for pk in pks:
        try:
            value = image_value(store.conn, spec, pk)
        except NotFound:
            value = None
        facts[pk] = image_facts(value, spec.root or ".")
    return facts


def image_facts(value, root) -> tuple:
    """(value as shown, size in bytes, width, height) of a path or BLOB; Nones where unknown."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        return (None, len(data), *_dimensions(data))
    if value is None or not str(value).strip():
        return (value, None, None, None)
    path = resolve_path(str(value).strip(), root)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(256 * 1024)
            dims = _dimensions(head)
            if dims == (None, None) and size > len(head):
                f.seek(0)
                dims = _dimensions(f.read())
    except OSError:
        return (value, None, None, None)
    return (value, size, *dims)


def _dimensions(data: bytes) -> tuple:
    try:
        return image_size(data)
    except ImageError:
        return (None, None)
