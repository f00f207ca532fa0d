"""Vec0Backend: vectors in sqlite-vec vec0 tables inside the index database.

Float indexes of QUANTIZE_MIN_DIMS or more dimensions also get a table of sign bits
(quantize.py) that pre-filters KNN candidates by Hamming distance; the candidates are
then ranked by their exact float distance, so distances and order are exact for
whatever is returned. Everything is written in the caller's transaction.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from . import quantize
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
        return params

    def drop(self, spec: IndexSpec) -> None:
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

    def knn(self, spec: IndexSpec, query: np.ndarray, k: int,
            exact: bool = False) -> list[tuple[int, float]]:
        """Float indexes with a sign-bit table: the nearest candidates by Hamming distance
        over all rows, ranked by exact float distance; with exact=True, or for indexes
        without that table (older versions, bit methods, few dimensions), sqlite-vec's
        exact scan."""
        if k <= 0:
            return []
        query = spec.as_vector(query)
        quantized = spec.quantized
        if not exact and quantized and quantized["mean"] is not None:
            return self._knn_prefiltered(spec, query, k)
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
        return [(i, d) for d, i in scored[:k]]

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
