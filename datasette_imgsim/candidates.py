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
    pairs: dict[tuple[int, int], float] = {}
    found: dict[tuple[int, int], tuple[str, float]] = {}
    for spec in specs:
        if spec.method not in bounds:
            continue
        bound = bounds[spec.method]
        if spec.element_type == "float" and store.counts(spec)["indexed"] > exact_limit \
                and store.graph_ready(spec):
            # A large index with its HNSW graph: every row's k neighbours from the graph.
            pks, found_pairs = _graph_pairs(store, spec, bound, k)
        else:
            pks, raw = store.load_vectors(spec)
            found_pairs = (neighbour_pairs(prepared(raw, spec.metric), spec.metric, bound, k,
                                           exact_limit) if len(pks) else ())
        here = []
        for pk in pks:
            if pk not in position:
                position[pk] = len(keys)
                keys.append(pk)
            here.append(position[pk])
        for i, j, distance in found_pairs:
            a, b = sorted((here[i], here[j]))
            if a == b:
                continue
            score = max(distance, 0.0) / bound if bound > 0 else 0.0
            if score < pairs.get((a, b), float("inf")):
                pairs[(a, b)] = score
                found[(a, b)] = (spec.method, float(distance))
    return Candidates(keys, pairs, found, dict(bounds), len(keys))


def _graph_pairs(store: Store, spec: IndexSpec, bound: float, k: int):
    """(pks, [(i, j, distance)]) of each row's neighbours within bound, from
    Store.neighbours (the graph's batch search)."""
    import numpy as np

    pks, positions, dist = store.neighbours(spec, k)
    rows, cols = np.nonzero((positions >= 0) & (dist <= bound + 1e-6))
    return pks, [(int(i), int(positions[i, c]), float(dist[i, c]))
                 for i, c in zip(rows.tolist(), cols.tolist()) if positions[i, c] != i]


def components(n: int, pairs) -> list[list[int]]:
    """Connected components (of two or more) of the candidate graph: each is decided on
    its own (no copy relation crosses them), so they are the unit of parallel work."""
    from .neighbours import connected_groups

    return connected_groups(n, [(a, b) for a, b in pairs])
