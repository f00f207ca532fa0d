"""Nearest-neighbour queries over an index: by a row's stored vector or by new image bytes."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .errors import NotFound, SearchError
from .images import load_image
from .plugins import get_method
from .rerank import CANDIDATES, parse_rerank, query_features, row_image
from .rerank import rerank as geometric_rerank
from .store import MAX_K, IndexSpec, Store

DEFAULT_K = 10


def parse_k(k: Any, default: int = DEFAULT_K) -> int:
    if k is None or k == "":
        return default
    try:
        value = int(k)
        if isinstance(k, float) and k != value:
            raise ValueError
    except (TypeError, ValueError):
        raise SearchError(f"k must be a whole number, not {k!r}") from None
    if value < 1:
        raise SearchError(f"k must be at least 1, not {value}")
    return min(value, MAX_K)


def similar_to_row(store: Store, table: str, pk: Any, k: Any = None,
                   method: Optional[str] = None, rerank: Optional[str] = None
                   ) -> tuple[IndexSpec, list[dict]]:
    """The k rows nearest to row pk, nearest first, without the row itself.
    rerank="geometric" re-orders the nearest candidates by local-feature matches."""
    k = parse_k(k)
    rerank = parse_rerank(rerank)
    spec = store.index(table, method)
    item_id = store.item_id(spec, pk)
    if item_id is None:
        raise NotFound(f"row {pk!r} of {table!r} is not in the {spec.method!r} index")
    vector = store.vector(spec, item_id)
    wanted = max(k, CANDIDATES) if rerank else k
    neighbours = store.knn(spec, vector, wanted + 1)
    results = [{"pk": p, "distance": d} for p, d, i in neighbours if i != item_id]
    if rerank:
        query = query_features(row_image(store, spec, pk))
        results = geometric_rerank(store, spec, query, results[:wanted])
    return spec, results[:k]


def embed_image(spec: IndexSpec, data: bytes) -> np.ndarray:
    """An image's vector as the index stores it (ImageError if it is not an image)."""
    method = get_method(spec.method)
    pixels = load_image(data, method.min_size)
    features = method.extractor(spec.params.get("embedding_version"))([pixels])
    return method.vectors_for(features.vectors, spec.metric)[0]


def similar_to_image(store: Store, table: str, data: bytes, k: Any = None,
                     method: Optional[str] = None, rerank: Optional[str] = None
                     ) -> tuple[IndexSpec, list[dict]]:
    """The k rows nearest to an image given as bytes (it need not be in the database).
    rerank="geometric" re-orders the nearest candidates by local-feature matches."""
    spec = store.index(table, method)
    return spec, similar_to_vector(store, spec, embed_image(spec, data), k, rerank, data)


def similar_to_vector(store: Store, spec: IndexSpec, vector: np.ndarray, k: Any = None,
                      rerank: Optional[str] = None, image: Optional[bytes] = None) -> list[dict]:
    """The k rows nearest to a vector made by embed_image(); re-ranking also needs the
    image bytes. Split from similar_to_image so a server can embed off its database thread."""
    k = parse_k(k)
    rerank = parse_rerank(rerank)
    wanted = max(k, CANDIDATES) if rerank else k
    results = [{"pk": p, "distance": d} for p, d, _ in store.knn(spec, vector, wanted)]
    if rerank:
        results = geometric_rerank(store, spec, query_features(image), results)
    return results[:k]
