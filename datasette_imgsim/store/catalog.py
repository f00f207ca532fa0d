"""Store: the catalogue of one index database (indexes, items, labels, errors) over a
VectorBackend that holds the vectors. Every statement on _imgsim_ tables is in store/."""
from __future__ import annotations

import json
from typing import Any, Iterable, Optional

import numpy as np

from ..errors import NotFound
from . import sidecar, verdicts
from .backend import VectorBackend
from .connection import quote_identifier
from .schema import (INDEX_COLUMNS, IndexSpec, ItemResult, ensure_schema, free_name, has_table,
                     now, save_params, slug)
from .vec0 import Vec0Backend

MAX_K = 1000


def key_candidates(pk) -> list:
    """A key as given and as the other type: URLs and SQL mix '7' and 7."""
    candidates = [pk]
    if isinstance(pk, str):
        text = pk.strip()
        if text.lstrip("-").isdigit():
            candidates.append(int(text))
    elif isinstance(pk, (int, float)) and not isinstance(pk, bool):
        candidates.append(str(pk))
    return candidates


class Store:
    """Reads and writes one database's _imgsim_ tables; the connection has sqlite-vec
    loaded. Vectors go through `backend` (sqlite-vec tables by default)."""

    def __init__(self, conn, backend: Optional[VectorBackend] = None):
        self.conn = conn
        if backend is None:
            from .factory import default_backend

            backend = default_backend(conn)
        self.backend = backend

    # --- schema and index definitions -------------------------------------------------

    def has_schema(self) -> bool:
        """Whether an index exists here, in this database or an attached sidecar (one
        created after the connection opened is attached now)."""
        for attempt in range(2):
            try:
                self.conn.execute("select 1 from _imgsim_indexes limit 0")
                return True
            except Exception:
                if attempt or not sidecar.attach_late(self.conn):
                    return False
        return False

    def ensure_schema(self) -> None:
        ensure_schema(self.conn)

    def indexes(self, table: Optional[str] = None) -> list[IndexSpec]:
        if not self.has_schema():
            return []
        sql = f"select {INDEX_COLUMNS} from _imgsim_indexes"
        params: tuple = ()
        if table is not None:
            sql += " where table_name = ?"
            params = (table,)
        return [IndexSpec.from_row(r) for r in self.conn.execute(sql + " order by id", params)]

    def index(self, table: str, method: Optional[str] = None) -> IndexSpec:
        """The index for table and method; without a method, the table's default index."""
        from ..plugins import default_index

        specs = self.indexes(table)
        if not specs:
            raise NotFound(f"table {table!r} has no image index; run: datasette imgsim index DB --table {table} --column COLUMN")
        if method is None:
            return default_index(specs)
        for spec in specs:
            if spec.method == method:
                return spec
        raise NotFound(
            f"table {table!r} has no {method!r} index; it has: "
            + ", ".join(s.method for s in specs)
        )

    def indexed_tables(self) -> dict[str, dict]:
        """{table or index name: {"column": image column, "pk": key column, "caption":
        caption column or None, "query": whether it indexes a query}}, first index first."""
        tables: dict[str, dict] = {}
        for spec in self.indexes():
            tables.setdefault(spec.table, {"column": spec.column, "pk": spec.pk,
                                           "caption": spec.source.get("caption_column"),
                                           "query": bool(spec.source_sql)})
        return tables

    def create_index(self, table, column, pk, root, method, metric, dims, element_type,
                     params: Optional[dict] = None) -> tuple[IndexSpec, Optional[str]]:
        """Create the index, or return the existing one; an existing index whose
        definition differs is emptied and redefined (the reason is returned). The root
        (where relative paths are resolved) is not part of the definition: a new one is
        recorded without a rebuild, since a file's fingerprint does not depend on it."""
        self.ensure_schema()
        reason = None
        source = (params or {}).get("source") or {}
        for existing in self.indexes(table):
            if existing.method != method:
                continue
            wanted = (column, pk, metric, dims, element_type, source.get("sql"))
            have = (existing.column, existing.pk, existing.metric, existing.dims,
                    existing.element_type, existing.source_sql)
            if wanted == have:
                if existing.root != root or existing.source != source:
                    with self.conn:
                        self.conn.execute("update _imgsim_indexes set root = ? where id = ?",
                                          (root, existing.id))
                        existing.root = root
                        existing.params = {**existing.params, "source": source} if source else existing.params
                        save_params(self.conn, existing)
                return existing, None
            changed = [n for n, a, b in zip(("column", "pk", "metric", "dims", "type", "query"),
                                             wanted, have) if a != b]
            reason = f"index definition changed ({', '.join(changed)}): rebuilding"
            self.drop_index(existing)
        vec_table = free_name(self.conn, f"_imgsim_{slug(table)}_{slug(method)}")
        stamp = now()
        with self.conn:
            cursor = self.conn.execute(
                "insert into _imgsim_indexes (table_name, image_column, pk_column, root, method, "
                "metric, dims, element_type, vec_table, params, created_at, updated_at) "
                "values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (table, column, pk, root, method, metric, dims, element_type, vec_table,
                 json.dumps(params or {}), stamp, stamp))
            spec = IndexSpec(cursor.lastrowid, table, column, pk, root, method, metric, dims,
                             element_type, vec_table, dict(params or {}), stamp, stamp)
            spec.params.update(self.backend.create(spec))
            save_params(self.conn, spec)
        return self.index(table, method), reason

    def drop_index(self, spec: IndexSpec) -> None:
        with self.conn:
            self.conn.execute(
                "delete from _imgsim_labels where item_id in "
                "(select item_id from _imgsim_items where index_id = ?)", (spec.id,))
            self.conn.execute("delete from _imgsim_items where index_id = ?", (spec.id,))
            self.backend.drop(spec)
            self.conn.execute("delete from _imgsim_indexes where id = ?", (spec.id,))
            if has_table(self.conn, "_imgsim_roots") and not self.conn.execute(
                    "select 1 from _imgsim_indexes where table_name = ?", (spec.table,)).fetchone():
                self.conn.execute("delete from _imgsim_roots where table_name = ?", (spec.table,))
                verdicts.clear(self.conn, spec.table)

    def drop_all(self) -> None:
        """Remove every _imgsim_ object of this database: no index is left."""
        for spec in self.indexes():
            self.drop_index(spec)
        with self.conn:
            for kind, name in self.conn.execute(
                    "select type, name from main.sqlite_master where name like '\\_imgsim\\_%' "
                    "escape '\\' and type in ('view', 'table') order by type = 'table'").fetchall():
                self.conn.execute(f"drop {kind} if exists {quote_identifier(name)}")

    # --- allowed roots ----------------------------------------------------------------

    def roots(self, table: str) -> list[str]:
        """The folders image files of an index name may be read from: each index's own
        root and the stored ones, in that order."""
        found = [spec.root for spec in self.indexes(table) if spec.root]
        if has_table(self.conn, "_imgsim_roots"):
            found += [root for (root,) in self.conn.execute(
                "select root from _imgsim_roots where table_name = ? order by origin, root",
                (table,))]
        return list(dict.fromkeys(found))

    def add_roots(self, table: str, roots, origin: str = "index") -> list[str]:
        """Record roots (absolute, existing folders); returns those that were new."""
        self.ensure_schema()
        known = set(self.roots(table))
        added = [root for root in dict.fromkeys(roots) if root not in known]
        with self.conn:
            self.conn.executemany(
                "insert or ignore into _imgsim_roots (table_name, root, origin) values (?, ?, ?)",
                [(table, root, origin) for root in added])
        return added

    def remove_root(self, table: str, root: str) -> bool:
        if not has_table(self.conn, "_imgsim_roots"):
            return False
        with self.conn:
            cursor = self.conn.execute(
                "delete from _imgsim_roots where table_name = ? and root = ?", (table, root))
        return cursor.rowcount > 0

    def set_params(self, spec: IndexSpec, params: dict) -> None:
        spec.params = params
        with self.conn:
            save_params(self.conn, spec)

    # --- per-row state ----------------------------------------------------------------

    def fingerprints(self, spec: IndexSpec) -> dict[Any, str]:
        return dict(self.conn.execute(
            "select pk, fingerprint from _imgsim_items where index_id = ?", (spec.id,)))

    def write(self, spec: IndexSpec, results: Iterable[ItemResult]) -> None:
        """Store a batch of results for one index. Call inside a transaction."""
        stamp = now()
        pending: dict[Any, tuple[int, np.ndarray]] = {}  # pk -> vector not yet added
        for result in results:
            self._delete_item(spec, result.pk)
            pending.pop(result.pk, None)  # the same key twice in a batch: the last wins
            cursor = self.conn.execute(
                "insert into _imgsim_items (index_id, pk, fingerprint, error, indexed_at) "
                "values (?, ?, ?, ?, ?)",
                (spec.id, result.pk, result.fingerprint, result.error, stamp))
            if result.error is not None:
                continue
            item_id = cursor.lastrowid
            pending[result.pk] = (item_id, spec.as_vector(result.vector))
            self.conn.executemany(
                "insert into _imgsim_labels (item_id, table_name, pk, rank, label, probability) "
                "values (?, ?, ?, ?, ?, ?)",
                [(item_id, spec.table, result.pk, rank, label, float(probability))
                 for rank, (label, probability) in enumerate(result.labels or (), start=1)])
        if pending:
            item_ids, vectors = zip(*pending.values())
            before = json.dumps(spec.params, sort_keys=True)
            self.backend.add(spec, list(item_ids), np.stack(vectors))
            if json.dumps(spec.params, sort_keys=True) != before:
                save_params(self.conn, spec)

    def delete(self, spec: IndexSpec, pks: Iterable[Any]) -> None:
        """Forget rows that left the source table. Call inside a transaction."""
        for pk in pks:
            self._delete_item(spec, pk)

    def _delete_item(self, spec: IndexSpec, pk) -> None:
        row = self.conn.execute(
            "select item_id from _imgsim_items where index_id = ? and pk = ?", (spec.id, pk)
        ).fetchone()
        if row is None:
            return
        (item_id,) = row
        self.backend.remove(spec, [item_id])
        self.conn.execute("delete from _imgsim_labels where item_id = ?", (item_id,))
        self.conn.execute("delete from _imgsim_items where item_id = ?", (item_id,))

    def touch(self, spec: IndexSpec) -> None:
        self.conn.execute("update _imgsim_indexes set updated_at = ? where id = ?", (now(), spec.id))

    # --- reading ----------------------------------------------------------------------

    def item(self, spec: IndexSpec, pk) -> Optional[tuple[int, Any]]:
        """(item id, the key as stored) of a source row, or None if it is not in the index;
        NotFound if it is there with an error."""
        for candidate in key_candidates(pk):
            row = self.conn.execute(
                "select item_id, pk, error from _imgsim_items where index_id = ? and pk = ?",
                (spec.id, candidate)).fetchone()
            if row is not None:
                if row[2] is not None:
                    raise NotFound(f"row {pk!r} of {spec.table!r} could not be indexed: {row[2]}")
                return row[0], row[1]
        return None

    def item_id(self, spec: IndexSpec, pk) -> Optional[int]:
        found = self.item(spec, pk)
        return None if found is None else found[0]

    def vector(self, spec: IndexSpec, item_id: int) -> np.ndarray:
        vector = self.backend.vector(spec, item_id)
        if vector is None:
            raise NotFound(f"no vector stored for item {item_id}")
        return vector

    def vectors_of(self, spec: IndexSpec, pks: list) -> np.ndarray:
        """The stored vectors of these indexed keys (as stored: what neighbours() and
        load_vectors() return), one row each in their order; NotFound for a key
        without one."""
        ids = {}
        for start in range(0, len(pks), 50_000):
            chunk = json.dumps(pks[start:start + 50_000], default=str)
            ids.update(self.conn.execute(
                "select pk, item_id from _imgsim_items where index_id = ? and error is null "
                "and pk in (select value from json_each(?))", (spec.id, chunk)))
        width = spec.dims // 8 if spec.element_type == "bit" else spec.dims
        out = np.empty((len(pks), width), dtype=spec.dtype)
        for n, pk in enumerate(pks):
            if pk not in ids:
                raise NotFound(f"row {pk!r} of {spec.table!r} is not indexed")
            out[n] = self.vector(spec, ids[pk])
        return out

    def _pks(self, item_ids) -> dict[int, Any]:
        return dict(self.conn.execute(
            "select item_id, pk from _imgsim_items where item_id in (select value from json_each(?))",
            (json.dumps([int(i) for i in item_ids]),)))

    def knn(self, spec: IndexSpec, vector, k: int, exact: bool = False,
            allowed_item_ids: Optional[Iterable[int]] = None) -> list[tuple[Any, float, int]]:
        """The k nearest neighbours of a vector (array or bytes): (pk, distance, item_id),
        nearest first. allowed_item_ids (see item_ids_for) restricts them to those rows
        and still returns k when that many are allowed (a selective filter: "taken in
        2020", "in this album")."""
        if k <= 0:
            return []
        vector = spec.as_vector(vector)
        if allowed_item_ids is None:
            hits = self.backend.knn(spec, vector, k, exact)
        else:
            allowed = allowed_item_ids if isinstance(allowed_item_ids, (set, frozenset)) \
                else {int(i) for i in allowed_item_ids}
            hits = self.backend.knn(spec, vector, k, exact, allowed=allowed)
        pks = self._pks(i for i, _ in hits)
        return [(pks[i], d, i) for i, d in hits if i in pks]

    def item_ids_for(self, spec: IndexSpec, pks: Iterable[Any]) -> set[int]:
        """The item ids of those source keys that are indexed (for knn's filter)."""
        candidates = [c for pk in pks for c in key_candidates(pk)]
        return {i for (i,) in self.conn.execute(
            "select item_id from _imgsim_items where index_id = ? and error is null and pk in "
            "(select value from json_each(?))", (spec.id, json.dumps(candidates, default=str)))}

    def neighbours(self, spec: IndexSpec, k: int, exact: bool = False):
        """Every indexed row's k nearest other rows, for duplicate finding: (pks list (n,),
        neighbour positions int64 (n, k) into that list, -1 where fewer, distances
        float32 (n, k), inf where fewer), nearest first. Through the backend's batch
        neighbours() (the HNSW graph when it has one), else exactly."""
        from .vec0 import neighbours_of

        if hasattr(self.backend, "neighbours"):
            item_ids, found, dist = self.backend.neighbours(spec, k, exact=exact)
        else:
            item_ids, matrix = self.backend.vectors(spec)
            item_ids, found, dist = neighbours_of(spec, item_ids, matrix, k)
        pks = self._pks(item_ids.tolist())
        keep = np.array([int(i) in pks for i in item_ids.tolist()], dtype=bool)
        kept_ids = item_ids[keep]
        position, valid = _positions(kept_ids, found)
        valid &= found >= 0
        position = np.where(valid, position, -1)[keep]
        dist = np.where(valid, dist, np.inf)[keep].astype(np.float32)
        return [pks[int(i)] for i in kept_ids.tolist()], position, dist

    def linked_pairs(self, spec: IndexSpec, bound: float, k: int):
        """For grouping only: (pks (n,), pairs (m, 2) of positions into pks, distances
        (m,)) of indexed rows within bound that the index's saved HNSW graph links
        directly. Their connected groups are those of every pair within bound, found
        at ~32 distances a row instead of a search per row; None when the backend has
        no such graph (then neighbours())."""
        found = self.backend.linked_pairs(spec, bound, k) \
            if hasattr(self.backend, "linked_pairs") else None
        if found is None:
            return None
        a, b, dist = found
        rows = self.conn.execute(
            "select item_id, pk from _imgsim_items where index_id = ? and error is null "
            "order by item_id", (spec.id,)).fetchall()
        item_ids = np.fromiter((i for i, _ in rows), dtype=np.int64, count=len(rows))
        (at_a, in_a), (at_b, in_b) = _positions(item_ids, a), _positions(item_ids, b)
        valid = in_a & in_b & (at_a != at_b)
        pairs = np.stack([at_a[valid], at_b[valid]], 1)
        return [pk for _, pk in rows], pairs, np.asarray(dist, np.float64)[valid]

    def graph_ready(self, spec: IndexSpec) -> bool:
        """Whether neighbours() would answer through a current HNSW graph (loading the
        saved one if needed) rather than by an exact scan."""
        from . import ann

        return (isinstance(self.backend, Vec0Backend) and ann.eligible(spec)
                and bool(spec.params.get("ann"))
                and ann.graph_for_query(self.conn, spec) is not None)

    def refresh_ann(self, spec: IndexSpec, save: Optional[bool] = None,
                    rebuild: bool = False, background: bool = False) -> dict:
        """Bring the index's derived HNSW graph (store/ann.py) up to the committed rows.
        With background=True, after committing a batch: returns at once, and a thread
        of this process applies the batch to the graph (queries cover what it has not
        applied yet by an exact scan beside the graph). Without, at the end of a run:
        stops that thread, applies the rest, and saves the graph file beside the index
        database when due (always with save=True, never with save=False). Enables the
        graph on an index made before it existed. Outside a transaction. Returns what
        it did: {"graph", "built", "generation", "saved", "rows", "seconds"}, or
        {"graph", "background"}."""
        from . import ann

        if not isinstance(self.backend, Vec0Backend) or not ann.eligible(spec):
            return {"graph": False}
        if not spec.params.get("ann"):
            with self.conn:
                ann.create_log(self.conn, spec)
                spec.params = {**spec.params, "ann": ann.new_params(spec)}
                save_params(self.conn, spec)
        if background:
            return ann.refresh_in_background(self.conn, spec)
        return ann.refresh(self.conn, spec, save=save, rebuild=rebuild)

    def load_vectors(self, spec: IndexSpec) -> tuple[list, np.ndarray]:
        """Every indexed row's key and vector, in item order: (pks, matrix)."""
        item_ids, matrix = self.backend.vectors(spec)
        pks = self._pks(item_ids.tolist())
        keep = [n for n, i in enumerate(item_ids.tolist()) if i in pks]
        return [pks[int(item_ids[n])] for n in keep], matrix[keep]

    def counts(self, spec: IndexSpec) -> dict[str, int]:
        indexed, failed = self.conn.execute(
            "select count(*) filter (where error is null), count(*) filter (where error is not null) "
            "from _imgsim_items where index_id = ?", (spec.id,)
        ).fetchone()
        return {"indexed": indexed, "errors": failed}

    def errors(self, spec: IndexSpec, limit: int = 100) -> list[tuple[Any, str]]:
        return self.conn.execute(
            "select pk, error from _imgsim_items where index_id = ? and error is not null "
            "order by item_id limit ?", (spec.id, limit)).fetchall()

    def labels(self, table: str, pk) -> list[tuple[str, float]]:
        if not self.has_schema():
            return []
        for candidate in key_candidates(pk):
            rows = self.conn.execute(
                "select label, probability from _imgsim_labels where table_name = ? and pk = ? "
                "order by rank", (table, candidate)).fetchall()
            if rows:
                return [(label, float(p)) for label, p in rows]
        return []

    def failed_rows(self) -> int:
        """Rows of every index here that have an error."""
        if not self.has_schema():
            return 0
        return self.conn.execute(
            "select count(*) from _imgsim_items where error is not null").fetchone()[0]


def _positions(sorted_ids: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(where each wanted id is in sorted_ids, whether it is there at all)."""
    wanted = np.asarray(wanted)
    if not len(sorted_ids):
        return np.zeros(wanted.shape, np.int64), np.zeros(wanted.shape, bool)
    at = np.minimum(np.searchsorted(sorted_ids, wanted), len(sorted_ids) - 1)
    return at, sorted_ids[at] == wanted
