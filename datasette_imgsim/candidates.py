"""Candidate pairs for duplicate finding: each image's nearest neighbours under a
generous bound, in every index of a table that proposes candidates, joined by key.

A bare threshold cannot tell a 64 % crop from another frame of the same scene, so this
stage only gathers pairs loosely (copies.py decides them); its bound is each method's
candidate_threshold. Pairs are scored by their distance over the bound (0: identical,
1: at the bound), the smallest over the methods that proposed them, so that the pairs
most likely to be copies are decided first.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from .errors import DuplicatesError
from .neighbours import DEFAULT_NEIGHBOURS, EXACT_LIMIT, neighbour_pairs, prepared
from .store import IndexSpec, Store


@dataclass(frozen=True)
class Candidates:
    keys: list  # every indexed key of the table (positions are indices into it)
    pairs: dict  # (i, j) with i < j -> score (distance / bound, smallest over methods)
    distances: dict  # (i, j) -> (method, distance) of that smallest score
    bounds: dict  # method -> the bound used
    indexed: int


def _method(name: str):
    from .plugins import get_methods

    return get_methods().get(name)


def default_bounds(specs: list[IndexSpec]) -> dict[str, float]:
    """method -> bound for the indexes that propose candidates: those with a
    candidate_threshold, else (a table with none of them) the default index's
    duplicate threshold."""
    bounds = {}
    for spec in specs:
        method = _method(spec.method)
        if method is not None and method.candidate_threshold is not None:
            bounds[spec.method] = method.candidate_threshold
    if not bounds and specs:
        from .duplicates import default_threshold

        bounds[specs[0].method] = default_threshold(specs[0].method)
    return bounds


def candidate_pairs(store: Store, specs: list[IndexSpec], bounds: Optional[dict] = None,
                    k: int = DEFAULT_NEIGHBOURS, exact_limit: int = EXACT_LIMIT) -> Candidates:
    """The candidate pairs of one table from its indexes (specs, default index first)."""
    if k < 1:
        raise DuplicatesError("neighbours must be at least 1")
    bounds = default_bounds(specs) if bounds is None else bounds
    keys: list = []
    position: dict[Any, int] = {}
    found = []  # per index: (pairs (m, 2) into keys, scores, distances, method number)
    methods = []
    for spec in specs:
        if spec.method not in bounds:
            continue
        bound = bounds[spec.method]
        pks, near, dist = near_pairs(store, spec, bound, k, exact_limit)
        here = np.empty(len(pks), dtype=np.int64)
        for n, pk in enumerate(pks):
            if pk not in position:
                position[pk] = len(keys)
                keys.append(pk)
            here[n] = position[pk]
        near = np.sort(here[near], axis=1)
        score = np.maximum(dist, 0.0) / bound if bound > 0 else np.zeros(len(dist))
        found.append((near, score, dist, np.full(len(dist), len(methods))))
        methods.append(spec.method)
    pairs, scores, dist, method = (np.concatenate(parts) for parts in zip(*found)) if found \
        else (np.empty((0, 2), np.int64), np.empty(0), np.empty(0), np.empty(0, np.int64))
    keep = pairs[:, 0] != pairs[:, 1]
    pairs, scores, dist, method = pairs[keep], scores[keep], dist[keep], method[keep]
    # Each pair once (it is found from both ends, and by each index): its smallest score.
    order = np.lexsort((scores, pairs[:, 1], pairs[:, 0]))
    pairs, scores, dist, method = pairs[order], scores[order], dist[order], method[order]
    first = np.ones(len(pairs), bool)
    first[1:] = (pairs[1:] != pairs[:-1]).any(1)
    pairs, scores, dist, method = pairs[first], scores[first], dist[first], method[first]
    keys_of = list(map(tuple, pairs.tolist()))
    return Candidates(keys, dict(zip(keys_of, scores.tolist())),
                      dict(zip(keys_of, zip((methods[m] for m in method.tolist()),
                                            dist.tolist()))),
                      dict(bounds), len(keys))


def near_pairs(store: Store, spec: IndexSpec, bound: float, k: int = DEFAULT_NEIGHBOURS,
               exact_limit: int = EXACT_LIMIT, groups_only: bool = False
               ) -> tuple[list, np.ndarray, np.ndarray]:
    """(pks, pairs (m, 2) of positions into pks, their distances (m,)): each indexed row
    linked to its at most k nearest others within bound (a pair may appear from both
    ends). A float index above exact_limit rows with a current HNSW graph answers from
    the graph's batch search (Store.neighbours: no vector matrix is loaded); else an
    exact or cell-wise scan of the vectors (neighbours.neighbour_pairs).

    groups_only: the caller only joins the pairs into connected groups, so above
    exact_limit the saved graph's own links within bound serve (Store.linked_pairs:
    the same groups, not each row's k nearest, at a fraction of the cost)."""
    large = spec.element_type == "float" and store.counts(spec)["indexed"] > exact_limit
    if large and groups_only:
        linked = store.linked_pairs(spec, bound, k)
        if linked is not None:
            return linked
    if large and store.graph_ready(spec):
        pks, positions, dist = store.neighbours(spec, k)
        rows, slots = np.nonzero((positions >= 0) & (dist <= bound + 1e-6))
        cols, near_d = positions[rows, slots], dist[rows, slots]
        keep = rows != cols
        return pks, np.stack([rows[keep], cols[keep]], 1), near_d[keep].astype(np.float64)
    pks, raw = store.load_vectors(spec)
    if not len(pks):
        return pks, np.empty((0, 2), np.int64), np.empty(0)
    found = list(neighbour_pairs(prepared(raw, spec.metric), spec.metric, bound, k, exact_limit))
    near = np.array([(i, j) for i, j, _ in found], dtype=np.int64).reshape(-1, 2)
    return pks, near, np.array([d for *_, d in found], dtype=np.float64)


def components(n: int, pairs) -> list[list[int]]:
    """Connected components (of two or more) of the candidate graph: each is decided on
    its own (no copy relation crosses them), so they are the unit of parallel work."""
    from .neighbours import connected_groups

    return connected_groups(n, [(a, b) for a, b in pairs])
