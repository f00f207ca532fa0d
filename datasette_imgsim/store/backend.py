"""The seam between the catalogue (which rows an index holds) and where vectors live.

A backend stores, per index, one vector per item id (the rowid of the item in
_imgsim_items) and answers nearest-neighbour queries over them. Vectors cross this seam
as numpy arrays: float32 of shape (dims,), or uint8 of shape (dims // 8,) for bit
indexes, whatever the engine stores them as. Item ids are ints.

Implementations: Vec0Backend (sqlite-vec tables in the index database, the default)
and MemoryBackend (exact numpy, for tests and as the simplest model of the contract).
tests/test_backend_contract.py runs the same suite against each; a new engine (pgvector,
a distributed vector database) is one more module that passes it.
"""
from __future__ import annotations

from typing import Collection, Optional, Protocol, Sequence

import numpy as np

from .schema import IndexSpec


class VectorBackend(Protocol):
    def create(self, spec: IndexSpec) -> dict:
        """Make room for a new index; returns params the backend wants kept in the index
        definition (spec.params), which it gets back on every later call."""

    def drop(self, spec: IndexSpec) -> None:
        """Remove every vector of an index, and the index's storage."""

    def add(self, spec: IndexSpec, item_ids: Sequence[int], vectors: np.ndarray) -> None:
        """Store vectors (one row each) under these item ids, replacing none: ids are new.
        The backend may update spec.params (state it keeps, such as a fitted centre); the
        catalogue stores them in the same transaction."""

    def remove(self, spec: IndexSpec, item_ids: Sequence[int]) -> None:
        """Forget these ids' vectors (unknown ids are ignored)."""

    def knn(self, spec: IndexSpec, query: np.ndarray, k: int, exact: bool = False,
            allowed: Optional[Collection[int]] = None) -> list[tuple[int, float]]:
        """The k nearest (item id, distance) to query, nearest first (ties by item id);
        distances in the index's metric. exact=True forbids approximation. allowed: only
        these item ids may be returned, and k of them are when k are allowed and stored
        (a filter must not make a search come back short)."""

    def neighbours(self, spec: IndexSpec, k: int,
                   exact: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each stored vector's k nearest others (duplicate finding): (item ids (n,) in
        item id order, their neighbours' item ids (n, k), -1 where fewer, distances
        float32 (n, k), inf where fewer), nearest first, ties by item id."""

    def vector(self, spec: IndexSpec, item_id: int) -> Optional[np.ndarray]:
        """One stored vector, or None."""

    def vectors(self, spec: IndexSpec) -> tuple[np.ndarray, np.ndarray]:
        """Every stored (item ids int64 (n,), vectors (n, width)), ordered by item id."""

    def count(self, spec: IndexSpec) -> int:
        """How many vectors the index holds."""


def distances(matrix: np.ndarray, query: np.ndarray, metric: str) -> np.ndarray:
    """Exact distances of each row of matrix to query, as sqlite-vec computes them."""
    if metric == "hamming":
        return np.unpackbits(np.bitwise_xor(matrix, query[None, :]), axis=1).sum(1).astype(np.float64)
    matrix = matrix.astype(np.float64)
    query = query.astype(np.float64)
    if metric == "cosine":
        norms = np.linalg.norm(matrix, axis=1) * np.linalg.norm(query)
        return 1.0 - (matrix @ query) / np.maximum(norms, 1e-30)
    if metric == "l2":
        return np.sqrt(((matrix - query) ** 2).sum(1))
    if metric == "l1":
        return np.abs(matrix - query).sum(1)
    raise ValueError(f"unknown metric {metric!r}")
