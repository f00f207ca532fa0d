"""Vec0Backend: vectors in sqlite-vec vec0 tables inside the index database.

Float indexes of QUANTIZE_MIN_DIMS or more dimensions also get a table of sign bits
(quantize.py) that pre-filters KNN candidates by Hamming distance; the candidates are
then ranked by their exact float distance, so distances and order are exact for
whatever is returned. Everything is written in the caller's transaction.
"""
from __future__ import annotations

from typing import Collection, Optional, Sequence

import numpy as np

from . import ann, quantize
from .connection import quote_identifier
from .schema import IndexSpec, free_name

# Float indexes of at least this many dimensions get a companion vec0 table of sign
# bits that pre-filters KNN candidates (below it an exact scan is already cheap).
QUANTIZE_MIN_DIMS = 64
# Candidates taken from the bit pre-filter for an exact float re-rank: enough for
# recall@10 >= 0.99 on clustered CNN embeddings up to 1M rows (bench/query_speed.py
# measures it). sqlite-vec's top-k selection costs k x rows, so the bit table is split
# into PARTITIONS by rowid (a vec0 partition key) and each is asked for its share of
# the candidates plus a margin: about the same candidates at 1/PARTITIONS of that
# cost (at 100k rows, 220 candidates take 14 ms in 16 partitions, 45 ms in one).
CANDIDATES_PER_K = 20
MIN_CANDIDATES = 200
PARTITIONS = 16
PARTITION_MARGIN = 4
MAX_CANDIDATES = 4096  # vec0's own limit on k
# The centre the sign bits are taken around is fitted on the first batch written,
# then refitted on everything stored whenever the index has grown 4x, until it was
# fitted on at least this many vectors; after that it stays fixed (new rows change
# the mean of a large collection very little, and a stale centre only makes the
# pre-filter a little less selective: the re-rank stays exact).
MEAN_SAMPLE_ROWS = 4096
# Float vectors are read one at a time for re-ranking; vec0 stores them in chunks
# that are single BLOBs, and reading one vector walks the chunk's overflow pages,
# so small chunks make that 20x faster (and inserts 10x faster) at no cost to scans.
FLOAT_CHUNK_SIZE = 8
# Each of the PARTITIONS starts with a whole chunk: at vec0's default of 1024 rows a
# 1280-bit table reserves 2.6 MB before its first row. 256 keeps small indexes small
# and costs nothing measurable at 100k rows.
BITS_CHUNK_SIZE = 256
# Candidates are re-ranked in statements of this many "rowid = ?" lookups joined by
# UNION ALL (always this many, padded with NULL, so the statement is prepared once):
# at 100k rows 288 candidates take 1.7 ms this way against 5.5 ms one statement each.
RERANK_BATCH = 32
# A filter (allowed item ids) of at most this many rows is answered by re-ranking all
# of them exactly (about 15 us a row) rather than by over-fetching.
ALLOWED_SCAN = 512
DISTANCE_FUNCTIONS = {"cosine": "vec_distance_cosine", "l2": "vec_distance_l2",
                      "l1": "vec_distance_l1"}


def vector_column(element_type: str, dims: int, metric: str) -> str:
    if element_type == "bit":
        return f"embedding bit[{dims}], chunk_size={BITS_CHUNK_SIZE}"
    return f"embedding float[{dims}] distance_metric={metric}, chunk_size={FLOAT_CHUNK_SIZE}"


def _vector_sql(spec: IndexSpec) -> str:
    """The SQL expression that turns a bound parameter into this index's vector type."""
    return "vec_bit(?)" if spec.element_type == "bit" else "?"


class Vec0Backend:
    def __init__(self, conn):
        self.conn = conn

    def create(self, spec: IndexSpec) -> dict:
        params = {}
        self.conn.execute(
            f"create virtual table {quote_identifier(spec.vec_table)} using vec0("
            f"{vector_column(spec.element_type, spec.dims, spec.metric)})")
        if spec.element_type == "float" and spec.dims >= QUANTIZE_MIN_DIMS:
            quantized = {"table": free_name(self.conn, f"{spec.vec_table}_bits"),
                         "bits": quantize.quantized_bits(spec.dims * quantize.BITS_PER_DIM),
                         "seed": 0, "partitions": PARTITIONS, "mean": None, "mean_rows": 0}
            self.conn.execute(
                f"create virtual table {quote_identifier(quantized['table'])} using vec0("
                f"part integer partition key, embedding bit[{quantized['bits']}], "
                f"chunk_size={BITS_CHUNK_SIZE})")
            params["quantized"] = quantized
        if ann.eligible(spec):
            ann.create_log(self.conn, spec)
            params["ann"] = ann.new_params(spec)
        return params

    def drop(self, spec: IndexSpec) -> None:
        ann.forget(self.conn, spec)
        ann.drop_log(self.conn, spec)
        self.conn.execute(f"drop table if exists {quote_identifier(spec.vec_table)}")
        if spec.quantized:
            self.conn.execute(f"drop table if exists {quote_identifier(spec.quantized['table'])}")

    def add(self, spec: IndexSpec, item_ids: Sequence[int], vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(np.atleast_2d(vectors), dtype=spec.dtype)
        self.conn.executemany(
            f"insert into {quote_identifier(spec.vec_table)} (rowid, embedding) "
            f"values (?, {_vector_sql(spec)})",
            [(int(i), v.tobytes()) for i, v in zip(item_ids, vectors)])
        if spec.quantized and len(vectors):
            self._add_bits(spec, list(item_ids), vectors)
        ann.record(self.conn, spec, item_ids)

    def _add_bits(self, spec: IndexSpec, item_ids: list, vectors: np.ndarray) -> None:
        """Sign bits of vectors just written, in the same transaction as the floats."""
        quantized = spec.quantized
        if quantized["mean"] is None:
            self._fit_mean(spec, vectors)
        elif quantized["mean_rows"] < MEAN_SAMPLE_ROWS:
            if self.count(spec) >= 4 * quantized["mean_rows"]:
                self._refit_mean(spec)
                return  # the refit rewrote every row's bits, these included
        bits = quantize.sign_bits(vectors, spec.quantized, spec.metric)
        self._insert_bits(spec.quantized, item_ids, bits)

    def _insert_bits(self, quantized: dict, item_ids: list, bits: np.ndarray) -> None:
        table = quote_identifier(quantized["table"])
        partitions = quantized.get("partitions", 1)
        if partitions == 1:  # a bit table made before partitions, without the column
            self.conn.executemany(
                f"insert into {table} (rowid, embedding) values (?, vec_bit(?))",
                [(int(i), row.tobytes()) for i, row in zip(item_ids, bits)])
            return
        self.conn.executemany(
            f"insert into {table} (rowid, part, embedding) values (?, ?, vec_bit(?))",
            [(int(i), int(i) % partitions, row.tobytes()) for i, row in zip(item_ids, bits)])

    def _fit_mean(self, spec: IndexSpec, vectors: np.ndarray) -> None:
        quantized = spec.quantized
        mean = quantize.for_signs(vectors, spec.metric).mean(axis=0)
        planes = quantize.projection(vectors.shape[1], quantized["bits"], quantized.get("seed", 0))
        spec.params = {**spec.params, "quantized": {
            **quantized,
            "mean": quantize.encode_mean(mean),
            "mean_rows": len(vectors),
            "centring": quantize.choose_centring(vectors, mean, planes, spec.metric)}}

    def _refit_mean(self, spec: IndexSpec) -> None:
        """Fit the centre on every stored vector and rewrite all sign bits."""
        item_ids, vectors = self.vectors(spec)
        self._fit_mean(spec, vectors)
        self.conn.execute(f"delete from {quote_identifier(spec.quantized['table'])}")
        bits = quantize.sign_bits(vectors, spec.quantized, spec.metric)
        self._insert_bits(spec.quantized, item_ids.tolist(), bits)

    def remove(self, spec: IndexSpec, item_ids: Sequence[int]) -> None:
        rows = [(int(i),) for i in item_ids]
        self.conn.executemany(f"delete from {quote_identifier(spec.vec_table)} where rowid = ?", rows)
        if spec.quantized:
            self.conn.executemany(
                f"delete from {quote_identifier(spec.quantized['table'])} where rowid = ?", rows)
        ann.record(self.conn, spec, item_ids)

    def knn(self, spec: IndexSpec, query: np.ndarray, k: int, exact: bool = False,
            allowed: Optional[Collection[int]] = None) -> list[tuple[int, float]]:
        """Float indexes with an up-to-date HNSW graph (ann.py): the graph's nearest
        candidates ranked by exact float distance. Otherwise, with a sign-bit table: the
        nearest candidates by Hamming distance over all rows, ranked the same way; with
        exact=True, or for indexes without that table (older versions, bit methods, few
        dimensions), sqlite-vec's exact scan. `allowed` (item ids) restricts the answer
        to those rows, still k of them when there are k (see _knn_allowed)."""
        if k <= 0:
            return []
        query = spec.as_vector(query)
        if allowed is not None:
            return self._knn_allowed(spec, query, k, allowed, exact)
        quantized = spec.quantized
        if not exact:
            graph = ann.graph_for_query(self.conn, spec)
            if graph is not None:
                wanted = max(k + ann.EXTRA_CANDIDATES, 2 * k)
                return self._rerank(spec, query, graph.candidates(query, wanted))[:k]
        if not exact and quantized and quantized["mean"] is not None:
            return self._knn_prefiltered(spec, query, k)
        return self._knn_exact(spec, query, k)

    def _knn_exact(self, spec: IndexSpec, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        rows = self.conn.execute(
            f"select rowid, distance from {quote_identifier(spec.vec_table)} "
            f"where embedding match {_vector_sql(spec)} and k = ?",
            (query.tobytes(), min(k, MAX_CANDIDATES))).fetchall()
        # Ties by item id (vec0 allows no second ORDER BY term), as the pre-filter orders.
        return sorted(
            ((item_id, float(d)) for item_id, d in rows), key=lambda r: (r[1], r[0]))

    def _knn_prefiltered(self, spec: IndexSpec, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        quantized = spec.quantized
        bits = quantize.sign_bits(query, quantized, spec.metric)[0].tobytes()
        partitions = quantized.get("partitions", 1)
        candidates = max(k * CANDIDATES_PER_K, MIN_CANDIDATES)
        share = min(-(-candidates // partitions) + (PARTITION_MARGIN if partitions > 1 else 0),
                    MAX_CANDIDATES)
        sql = (f"select rowid from {quote_identifier(quantized['table'])} "
               "where embedding match vec_bit(?) and k = ?")
        if partitions == 1:
            item_ids = [i for (i,) in self.conn.execute(sql, (bits, share))]
        else:
            item_ids = [i for part in range(partitions)
                        for (i,) in self.conn.execute(sql + " and part = ?", (bits, share, part))]
        return self._rerank(spec, query, item_ids)[:k]

    def _rerank(self, spec: IndexSpec, query: np.ndarray, item_ids: list) -> list[tuple[int, float]]:
        """(item id, exact distance) of those of item_ids still stored, nearest first."""
        # vec0 answers "rowid = ?" from its rowid table but "rowid in (...)" with a
        # scan, hence lookups joined by UNION ALL. The distance function is the one
        # the exact scan uses, so both paths give the same distances.
        sql = " union all ".join(
            f"select rowid, {DISTANCE_FUNCTIONS[spec.metric]}(embedding, ?1) "
            f"from {quote_identifier(spec.vec_table)} where rowid = ?{n + 2}"
            for n in range(RERANK_BATCH))
        vector = query.tobytes()
        scored = []
        for start in range(0, len(item_ids), RERANK_BATCH):
            batch = item_ids[start:start + RERANK_BATCH]
            batch += [None] * (RERANK_BATCH - len(batch))
            scored.extend((float(d), i) for i, d in self.conn.execute(sql, (vector, *batch)))
        scored.sort()
        return [(i, d) for d, i in scored]

    def _knn_allowed(self, spec: IndexSpec, query: np.ndarray, k: int,
                     allowed: Collection[int], exact: bool) -> list[tuple[int, float]]:
        """The k nearest among allowed item ids. A few (up to ALLOWED_SCAN) are simply
        all re-ranked exactly. More: the approximate search asked for ever more
        candidates (over-fetch: k / the allowed fraction x 2, doubling) until k allowed
        come back, through the graph's filter when there is one; what is still short
        (a filter that matches nearly nothing near the query) ends in the exact
        re-rank of every allowed row."""
        allowed = allowed if isinstance(allowed, (set, frozenset)) else {int(i) for i in allowed}
        if not allowed:
            return []
        if exact or len(allowed) <= ALLOWED_SCAN:
            return self._rerank(spec, query, sorted(allowed))[:k]
        graph = ann.graph_for_query(self.conn, spec)
        if graph is not None:
            wanted = max(k + ann.EXTRA_CANDIDATES, 2 * k)
            # The graph's own filtered search: it walks on until it has `wanted` allowed.
            candidates = [i for i in graph.candidates(query, wanted, allowed) if i in allowed]
            found = self._rerank(spec, query, candidates)
            if len(found) >= min(k, len(allowed)):
                return found[:k]
        total = max(self.count(spec), 1)
        want = min(int(k * total / len(allowed) * 2) + k, MAX_CANDIDATES)
        while True:
            found = [(i, d) for i, d in self.knn(spec, query, want) if i in allowed]
            if len(found) >= k or want >= MAX_CANDIDATES:
                break
            want = min(want * 2, MAX_CANDIDATES)
        if len(found) >= min(k, len(allowed)):
            return found[:k]
        return self._rerank(spec, query, sorted(allowed))[:k]

    def neighbours(self, spec: IndexSpec, k: int, exact: bool = False,
                   batch: int = 512) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each stored vector's k nearest other vectors: (item ids (n,), neighbour item
        ids (n, k), distances (n, k)), rows ordered by item id, neighbours nearest first,
        -1 / inf where an index has fewer than k + 1 rows. Through the HNSW graph when
        there is an up-to-date one (queried in batches on every core; distances are the
        graph's, within 1e-6 of exact), else exactly in numpy blocks."""
        graph = None if exact else ann.graph_for_query(self.conn, spec)
        if graph is not None:
            # Queries read a chunk at a time, in one snapshot with the ids: no matrix of
            # the whole index is held (5 GB at 1M cnn rows).
            table = quote_identifier(spec.vec_table)
            self.conn.execute("begin")
            try:
                ids = np.fromiter((i for (i,) in self.conn.execute(
                    f"select rowid from {table} order by rowid")), dtype=np.int64)
                rows = self.conn.execute(f"select rowid, embedding from {table} order by rowid")
                chunks = iter(lambda: rows.fetchmany(batch), [])
                return graph_neighbours(spec, ids, (
                    np.frombuffer(b"".join(blob for _, blob in chunk), dtype=np.float32
                                  ).reshape(len(chunk), spec.dims) for chunk in chunks),
                    graph, k)
            finally:
                self.conn.execute("rollback")
        ids, matrix = self.vectors(spec)
        return neighbours_of(spec, ids, matrix, k, batch=batch)

    def linked_pairs(self, spec: IndexSpec, bound: float, k: int):
        """(item ids a, b, distances) of rows within bound linked in the index's saved
        HNSW graph, which join the same groups as all pairs within bound (ann.linked_pairs);
        None without a graph that serves."""
        if not spec.params.get("ann") or not ann.eligible(spec):
            return None
        return ann.linked_pairs(self.conn, spec, bound, k)

    def vector(self, spec: IndexSpec, item_id: int) -> Optional[np.ndarray]:
        row = self.conn.execute(
            f"select embedding from {quote_identifier(spec.vec_table)} where rowid = ?",
            (item_id,)).fetchone()
        return None if row is None else spec.as_vector(row[0])

    def vectors(self, spec: IndexSpec) -> tuple[np.ndarray, np.ndarray]:
        rows = self.conn.execute(
            f"select rowid, embedding from {quote_identifier(spec.vec_table)} order by rowid"
        ).fetchall()
        width = spec.dims // 8 if spec.element_type == "bit" else spec.dims
        ids = np.array([i for i, _ in rows], dtype=np.int64)
        matrix = np.frombuffer(b"".join(blob for _, blob in rows), dtype=spec.dtype)
        return ids, matrix.reshape(len(rows), width)

    def count(self, spec: IndexSpec) -> int:
        return self.conn.execute(
            f"select count(*) from {quote_identifier(spec.vec_table)}").fetchone()[0]


def graph_neighbours(spec: IndexSpec, ids: np.ndarray, queries, graph, k: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vec0Backend.neighbours through an HNSW graph holding exactly the rows `ids`
    (sorted): `queries` yields their vectors in that order, a batch at a time, and
    each batch is searched for its k + 1 nearest on every core. Distances are the
    graph's (within 1e-6 of exact); ties by item id."""
    n = len(ids)
    out_ids = np.full((n, k), -1, dtype=np.int64)
    out_d = np.full((n, k), np.inf, dtype=np.float32)
    if n == 0 or k <= 0:
        return ids, out_ids, out_d
    wanted = min(k + 1, graph.live)
    start = 0
    for batch in queries:
        rows = np.arange(start, start + len(batch))
        start += len(batch)
        labels, d = ann.batch_search(graph, spec, batch, wanted, ann.NEIGHBOURS_EF)
        cand = np.minimum(np.searchsorted(ids, labels), n - 1)
        valid = (ids[cand] == labels) & (cand != rows[:, None])
        d = np.where(valid, d, np.inf).astype(np.float32)
        order = np.lexsort((labels, d), axis=-1)[:, :k]
        got_d = np.take_along_axis(d, order, 1)
        got = np.where(np.isfinite(got_d), np.take_along_axis(labels, order, 1), -1)
        out_ids[rows, :order.shape[1]] = got
        out_d[rows, :order.shape[1]] = got_d
    return ids, out_ids, out_d


def neighbours_of(spec: IndexSpec, ids: np.ndarray, matrix: np.ndarray, k: int,
                  batch: int = 1024) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The batch k-nearest-neighbour graph of (ids sorted, matrix): see
    Vec0Backend.neighbours. Distances are exact (float32, the metric's); ties by item id."""
    from .backend import distances

    n = len(ids)
    out_ids = np.full((n, k), -1, dtype=np.int64)
    out_d = np.full((n, k), np.inf, dtype=np.float32)
    if n == 0 or k <= 0:
        return ids, out_ids, out_d
    dense = spec.element_type == "float" and spec.metric in ("cosine", "l2")
    if dense:
        norms = np.linalg.norm(matrix, axis=1).astype(np.float32)
        squares = norms ** 2

    def dense_distances(rows: np.ndarray, cols) -> np.ndarray:
        """(len(rows), len(cols)) distances, cols an index array or slice."""
        dots = matrix[rows] @ matrix[cols].T
        if spec.metric == "cosine":
            return 1.0 - dots / np.maximum(np.outer(norms[rows], norms[cols]), 1e-30)
        return np.sqrt(np.maximum(squares[rows][:, None] + squares[cols][None, :] - 2 * dots, 0))

    for start in range(0, n, batch):
        rows = np.arange(start, min(start + batch, n))
        if dense:
            block = dense_distances(rows, slice(None)).astype(np.float32)
        else:
            block = np.stack([distances(matrix, matrix[p], spec.metric) for p in rows]).astype(np.float32)
        block[np.arange(len(rows)), rows] = np.inf
        take = min(k, n - 1)
        if take <= 0:
            continue
        part = np.argpartition(block, take - 1, axis=1)[:, :take] if take < n else \
            np.tile(np.arange(n), (len(rows), 1))
        for r, p in enumerate(rows):
            cols = part[r]
            d = block[r, cols]
            order = np.lexsort((ids[cols], d))[:k]
            out_ids[p, :len(order)] = ids[cols[order]]
            out_d[p, :len(order)] = d[order]
    return ids, out_ids, out_d
