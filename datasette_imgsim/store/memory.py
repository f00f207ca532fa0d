"""MemoryBackend: exact nearest neighbours over in-memory numpy arrays.

The simplest implementation of the VectorBackend contract: tests use it to show that
the catalogue and search work with any backend, and it documents what a backend must do.
"""
from __future__ import annotations

from typing import Collection, Optional, Sequence

import numpy as np

from .backend import distances
from .schema import IndexSpec


class MemoryBackend:
    def __init__(self):
        self._indexes: dict[str, dict[int, np.ndarray]] = {}

    def _rows(self, spec: IndexSpec) -> dict[int, np.ndarray]:
        return self._indexes.setdefault(spec.vec_table, {})

    def create(self, spec: IndexSpec) -> dict:
        self._indexes[spec.vec_table] = {}
        return {}

    def drop(self, spec: IndexSpec) -> None:
        self._indexes.pop(spec.vec_table, None)

    def add(self, spec: IndexSpec, item_ids: Sequence[int], vectors: np.ndarray) -> None:
        rows = self._rows(spec)
        for item_id, vector in zip(item_ids, np.atleast_2d(vectors)):
            rows[int(item_id)] = np.array(vector, dtype=spec.dtype)

    def remove(self, spec: IndexSpec, item_ids: Sequence[int]) -> None:
        rows = self._rows(spec)
        for item_id in item_ids:
            rows.pop(int(item_id), None)

    def knn(self, spec: IndexSpec, query: np.ndarray, k: int, exact: bool = False,
            allowed: Optional[Collection[int]] = None) -> list[tuple[int, float]]:
        ids, matrix = self.vectors(spec)
        if allowed is not None and len(ids):
            keep = np.isin(ids, np.fromiter((int(i) for i in allowed), dtype=np.int64))
            ids, matrix = ids[keep], matrix[keep]
        if not len(ids) or k <= 0:
            return []
        found = distances(matrix, spec.as_vector(query), spec.metric).astype(np.float32)
        order = np.lexsort((ids, found))[:k]
        return [(int(ids[i]), float(found[i])) for i in order]

    def vector(self, spec: IndexSpec, item_id: int) -> Optional[np.ndarray]:
        return self._rows(spec).get(int(item_id))

    def vectors(self, spec: IndexSpec) -> tuple[np.ndarray, np.ndarray]:
        rows = self._rows(spec)
        ids = np.array(sorted(rows), dtype=np.int64)
        width = spec.dims // 8 if spec.element_type == "bit" else spec.dims
        matrix = (np.stack([rows[i] for i in ids]) if len(ids)
                  else np.zeros((0, width), dtype=spec.dtype))
        return ids, matrix

    def neighbours(self, spec: IndexSpec, k: int, exact: bool = False):
        from .vec0 import neighbours_of

        ids, matrix = self.vectors(spec)
        return neighbours_of(spec, ids, matrix, k)

    def count(self, spec: IndexSpec) -> int:
        return len(self._rows(spec))
