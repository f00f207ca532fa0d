"""MilvusBackend: an index's vectors in a Milvus collection (pip install datasette-imgsim[milvus]).

For libraries bigger than one machine's SQLite file: the catalogue (_imgsim_ tables,
keys, labels, errors) stays in the SQLite index database; the vectors go to one Milvus
collection per index, named after the index's vec_table, with the item ids
(_imgsim_items rowids) as primary keys. Selected by an index_db of
``milvus://host:19530/dbname`` (a Milvus standalone or cluster server) or
``milvus+lite:/path/to/file.db`` / ``/path/to/file.milvus.db`` (Milvus Lite,
embedded, one machine): see backend_for() in store/factory.py.

Searches ask Milvus for candidates (its HNSW index, or FLAT on Milvus Lite) and re-rank
them by exact distance computed here (backend.distances), so distances and ties agree
with every other backend. Milvus has no L1 metric: l1 indexes are searched exactly.

Milvus writes are not part of the SQLite transaction: a write is upserted (a retried or
rolled-back batch leaves at most orphan vectors under ids the catalogue does not know,
which Store.knn drops and the next write of that id replaces); orphans() lists them.
"""
from __future__ import annotations

import threading
from typing import Collection, Optional, Sequence
from urllib.parse import urlparse

import numpy as np

from .backend import distances
from .schema import IndexSpec

METRICS = {"cosine": "COSINE", "l2": "L2", "hamming": "HAMMING"}
# Candidates asked of Milvus for the exact re-rank: k + this, at least 2k.
EXTRA_CANDIDATES = 10
MAX_LIMIT = 16384  # Milvus's topk limit
HNSW_PARAMS = {"M": 16, "efConstruction": 200}
SEARCH_EF = 64
BATCH = 1000

_clients: dict[tuple, object] = {}
_lock = threading.Lock()


def is_milvus(location) -> bool:
    text = str(location or "")
    return text.startswith(("milvus://", "milvus+lite:")) or text.endswith(".milvus.db")


def client_args(location: str) -> dict:
    """MilvusClient arguments for milvus://host:port/db or a Milvus Lite file."""
    text = str(location)
    if text.startswith("milvus://"):
        parsed = urlparse(text)
        args = {"uri": f"http://{parsed.hostname or 'localhost'}:{parsed.port or 19530}"}
        db = parsed.path.strip("/")
        if db:
            args["db_name"] = db
        if parsed.username:
            args["user"] = parsed.username
            args["password"] = parsed.password or ""
        return args
    if text.startswith("milvus+lite:"):
        text = text[len("milvus+lite:"):]
        if text.startswith("//"):
            text = text[2:]
    return {"uri": text}


def client_for(location: str):
    """One MilvusClient per location and process (Milvus Lite starts a server per file)."""
    from pymilvus import MilvusClient

    args = client_args(location)
    key = tuple(sorted(args.items()))
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = MilvusClient(**args)
        return client


class MilvusBackend:
    def __init__(self, location: str, client=None):
        self.location = location
        self.client = client if client is not None else client_for(location)
        self.lite = not str(location).startswith("milvus://")

    # --- collections ------------------------------------------------------------------

    def _name(self, spec: IndexSpec) -> str:
        return spec.vec_table

    def _bits_as_floats(self, spec: IndexSpec) -> bool:
        """Milvus Lite has no binary vectors: bits are stored as 0/1 floats, whose
        squared L2 distance is the Hamming distance."""
        return spec.element_type == "bit" and self.lite

    def _field_type(self, spec: IndexSpec):
        from pymilvus import DataType

        if spec.element_type == "bit" and not self.lite:
            return DataType.BINARY_VECTOR
        return DataType.FLOAT_VECTOR

    def _metric(self, spec: IndexSpec) -> str:
        return "L2" if self._bits_as_floats(spec) else METRICS[spec.metric]

    def create(self, spec: IndexSpec) -> dict:
        from pymilvus import MilvusClient

        name = self._name(spec)
        if self.client.has_collection(name):
            self.client.drop_collection(name)
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        from pymilvus import DataType

        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", self._field_type(spec), dim=spec.dims)
        index = self.client.prepare_index_params()
        metric = self._metric(spec) if spec.metric in METRICS else "L2"
        if spec.element_type == "bit" and not self.lite:
            index.add_index(field_name="vector", index_type="BIN_FLAT", metric_type=metric)
        elif self.lite:
            index.add_index(field_name="vector", index_type="FLAT", metric_type=metric)
        else:
            index.add_index(field_name="vector", index_type="HNSW", metric_type=metric,
                            params=HNSW_PARAMS)
        self.client.create_collection(name, schema=schema, index_params=index,
                                      consistency_level="Strong")
        return {"milvus": {"collection": name, "metric": metric}}

    def drop(self, spec: IndexSpec) -> None:
        if self.client.has_collection(self._name(spec)):
            self.client.drop_collection(self._name(spec))

    # --- rows -------------------------------------------------------------------------

    def _encode(self, spec: IndexSpec, vector: np.ndarray):
        if self._bits_as_floats(spec):
            return np.unpackbits(np.ascontiguousarray(vector, dtype=np.uint8)).astype(np.float32).tolist()
        if spec.element_type == "bit":
            return np.ascontiguousarray(vector, dtype=np.uint8).tobytes()
        return np.asarray(vector, dtype=np.float32).tolist()

    def _decode(self, spec: IndexSpec, value) -> np.ndarray:
        if self._bits_as_floats(spec):
            return np.packbits(np.asarray(value, dtype=np.float32) > 0.5)
        if spec.element_type == "bit":
            if isinstance(value, list):
                value = value[0] if len(value) == 1 and isinstance(value[0], (bytes, bytearray)) \
                    else bytes(value)
            return np.frombuffer(bytes(value), dtype=np.uint8).copy()
        return np.asarray(value, dtype=np.float32)

    def add(self, spec: IndexSpec, item_ids: Sequence[int], vectors: np.ndarray) -> None:
        vectors = np.atleast_2d(vectors)
        ids = [int(i) for i in item_ids]
        for start in range(0, len(ids), BATCH):
            self.client.upsert(self._name(spec), [
                {"id": i, "vector": self._encode(spec, v)}
                for i, v in zip(ids[start:start + BATCH], vectors[start:start + BATCH])])

    def remove(self, spec: IndexSpec, item_ids: Sequence[int]) -> None:
        ids = [int(i) for i in item_ids]
        for start in range(0, len(ids), BATCH):
            self.client.delete(self._name(spec), ids=ids[start:start + BATCH])

    def _get(self, spec: IndexSpec, ids: list) -> dict[int, np.ndarray]:
        out = {}
        for start in range(0, len(ids), BATCH):
            for row in self.client.get(self._name(spec), ids=ids[start:start + BATCH],
                                       output_fields=["vector"]):
                out[int(row["id"])] = self._decode(spec, row["vector"])
        return out

    def vector(self, spec: IndexSpec, item_id: int) -> Optional[np.ndarray]:
        return self._get(spec, [int(item_id)]).get(int(item_id))

    def vectors(self, spec: IndexSpec) -> tuple[np.ndarray, np.ndarray]:
        rows: dict[int, np.ndarray] = {}
        iterator = self.client.query_iterator(self._name(spec), batch_size=BATCH, filter="",
                                              output_fields=["vector"])
        try:
            while True:
                batch = iterator.next()
                if not batch:
                    break
                for row in batch:
                    rows[int(row["id"])] = self._decode(spec, row["vector"])
        finally:
            iterator.close()
        ids = np.array(sorted(rows), dtype=np.int64)
        width = spec.dims // 8 if spec.element_type == "bit" else spec.dims
        matrix = (np.stack([rows[i] for i in ids.tolist()]) if len(ids)
                  else np.zeros((0, width), dtype=spec.dtype))
        return ids, matrix.astype(spec.dtype, copy=False)

    def count(self, spec: IndexSpec) -> int:
        result = self.client.query(self._name(spec), filter="", output_fields=["count(*)"],
                                   consistency_level="Strong")
        return int(result[0]["count(*)"]) if result else 0

    def orphans(self, spec: IndexSpec, known_item_ids: Collection[int]) -> list[int]:
        """Ids with a vector here that the catalogue does not know (see the module doc)."""
        ids, _ = self.vectors(spec)
        known = set(int(i) for i in known_item_ids)
        return [int(i) for i in ids if int(i) not in known]

    # --- search -----------------------------------------------------------------------

    def _exact(self, spec: IndexSpec, query: np.ndarray, ids: np.ndarray, matrix: np.ndarray,
               k: int) -> list[tuple[int, float]]:
        if not len(ids):
            return []
        found = distances(matrix, query, spec.metric).astype(np.float32)
        order = np.lexsort((ids, found))[:k]
        return [(int(ids[i]), float(found[i])) for i in order]

    def knn(self, spec: IndexSpec, query: np.ndarray, k: int, exact: bool = False,
            allowed: Optional[Collection[int]] = None) -> list[tuple[int, float]]:
        if k <= 0:
            return []
        query = spec.as_vector(query)
        if exact or spec.metric not in METRICS:
            ids, matrix = self.vectors(spec)
            if allowed is not None and len(ids):
                keep = np.isin(ids, np.fromiter((int(i) for i in allowed), dtype=np.int64))
                ids, matrix = ids[keep], matrix[keep]
            return self._exact(spec, query, ids, matrix, k)
        wanted = min(max(k + EXTRA_CANDIDATES, 2 * k), MAX_LIMIT)
        kwargs = {}
        if allowed is not None:
            allowed = sorted(int(i) for i in allowed)
            if not allowed:
                return []
            kwargs["filter"] = f"id in [{','.join(map(str, allowed))}]"
        params = {"metric_type": self._metric(spec), "params": {"ef": max(SEARCH_EF, wanted)}}
        hits = self.client.search(self._name(spec), data=[self._encode(spec, query)], limit=wanted,
                                  search_params=params, output_fields=["vector"],
                                  consistency_level="Strong", **kwargs)[0]
        if not hits:
            return []
        ids = np.array([int(h["id"]) for h in hits], dtype=np.int64)
        matrix = np.stack([self._decode(spec, h["entity"]["vector"]) for h in hits])
        return self._exact(spec, query, ids, matrix, k)

    def neighbours(self, spec: IndexSpec, k: int, exact: bool = False, batch: int = 256):
        """Each vector's k nearest others: batched Milvus searches, re-ranked exactly."""
        from .vec0 import neighbours_of

        ids, matrix = self.vectors(spec)
        if exact or spec.metric not in METRICS or not len(ids):
            return neighbours_of(spec, ids, matrix, k)
        n = len(ids)
        out_ids = np.full((n, k), -1, dtype=np.int64)
        out_d = np.full((n, k), np.inf, dtype=np.float32)
        position = {int(i): p for p, i in enumerate(ids.tolist())}
        wanted = min(k + 1 + EXTRA_CANDIDATES, MAX_LIMIT)
        params = {"metric_type": self._metric(spec), "params": {"ef": max(SEARCH_EF, wanted)}}
        for start in range(0, n, batch):
            block = matrix[start:start + batch]
            results = self.client.search(self._name(spec), data=[self._encode(spec, v) for v in block],
                                         limit=wanted, search_params=params,
                                         consistency_level="Strong")
            for r, hits in enumerate(results):
                p = start + r
                cols = np.array([position[int(h["id"])] for h in hits
                                 if int(h["id"]) in position and position[int(h["id"])] != p],
                                dtype=np.int64)
                if not len(cols):
                    continue
                d = distances(matrix[cols], matrix[p], spec.metric).astype(np.float32)
                order = np.lexsort((ids[cols], d))[:k]
                out_ids[p, :len(order)] = ids[cols[order]]
                out_d[p, :len(order)] = d[order]
        return ids, out_ids, out_d
