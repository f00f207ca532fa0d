"""The public Python API: what the CLI, the SQL functions and the pages all use.

    from datasette_imgsim import ImageIndex

    index = ImageIndex.open("photos.db")            # a sidecar photos-imgsim.db is found
    index.build("photos", "path", methods=["cnn", "phash"])
    for match in index.similar_to_row("photos", 38, k=3):
        print(match.pk, match.distance)
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from . import search
from .errors import ImgsimError, NotFound, SourceError
from .store import IndexSpec, Store, connect
from .store.sidecar import attach, find_sidecar


@dataclass(frozen=True)
class Match:
    """One search result: the row's key, its distance in the index's metric, and with
    geometric re-ranking the number of matched local features."""

    pk: Any
    distance: float
    inliers: Optional[int] = None

    def to_dict(self) -> dict:
        found = asdict(self)
        if self.inliers is None:
            del found["inliers"]
        return found

    @classmethod
    def from_result(cls, result: dict) -> "Match":
        return cls(result["pk"], result["distance"], result.get("inliers"))


@dataclass
class BuildPlan:
    """An index run checked and ready: the source table, root, indexes and row count."""

    source: Any
    root: str
    specs: list
    total: int


class ImageIndex:
    """The image indexes of one photo database: in it, or in its sidecar index database.

    `source` is a connection to the photo database (read-only unless the index lives in
    it); `store` is the Store of the database that holds the index."""

    def __init__(self, source, store: Store, database_path: Optional[str] = None):
        self.source = source
        self.store = store
        self.database_path = database_path

    @classmethod
    def open(cls, db_path, index_db: Optional[str] = None, write: bool = False) -> "ImageIndex":
        """The indexes of the photo database at db_path (its sidecar is attached when it
        has one). write=True opens the database that holds the index for writing."""
        db_path = str(db_path)
        if not Path(db_path).exists():
            raise NotFound(f"database file not found: {db_path}")
        sidecar = find_sidecar(db_path, index_db)
        if sidecar is None:
            conn = connect(db_path, readonly=not write)
            return cls(conn, Store(conn), db_path)
        source = connect(db_path, readonly=True)
        if write:
            if not sidecar.parent.is_dir():
                raise NotFound(f"folder for the index database not found: {sidecar.parent}")
            return cls(source, Store(connect(str(sidecar))), db_path)
        if not sidecar.exists():
            raise NotFound(f"index database not found: {sidecar}")
        attach(source, sidecar)
        return cls(source, Store(source), db_path)

    @classmethod
    def over(cls, conn) -> "ImageIndex":
        """The indexes reachable from an open connection (Datasette's, with any sidecar
        already attached): for SQL functions and pages."""
        return cls(conn, Store(conn))

    def close(self) -> None:
        for conn in {id(c): c for c in (self.source, self.store.conn)}.values():
            conn.close()

    def __enter__(self) -> "ImageIndex":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- building ---------------------------------------------------------------------

    def prepare_build(self, table: str, column: str, methods: Sequence[str] = (),
                      metric: Optional[str] = None, pk: Optional[str] = None,
                      root: Optional[str] = None,
                      notes: Optional[Callable[[str], None]] = None) -> "BuildPlan":
        """Check the names and create (or redefine) the indexes, before any image is read."""
        from .plugins import default_method_name, get_method
        from .source import count_rows, default_root, describe_source

        chosen = [get_method(name) for name in (methods or [default_method_name()])]
        source = describe_source(self.source, table, column, pk)
        if root:
            root = str(Path(root).resolve())
        elif self.database_path:
            root = default_root(self.database_path)
        else:
            root = os.getcwd()
        for method in chosen:
            wanted = metric if (metric and method.element_type == "float") else method.metric
            if wanted not in method.metrics:
                raise SourceError(f"{method.name} does not support metric {wanted!r}")
        specs = []
        for method in chosen:
            wanted = metric if (metric and method.element_type == "float") else method.metric
            spec, note = self.store.create_index(table, column, source.pk, root, method.name,
                                                 wanted, method.dims, method.element_type)
            if note and notes:
                notes(f"{method.name}: {note}")
            specs.append(spec)
        return BuildPlan(source, root, specs, count_rows(self.source, source))

    def run_build(self, plan: "BuildPlan", workers: int = 1,
                  progress: Optional[Callable[[int], None]] = None):
        """Index every row of a prepared build; returns the indexer's Summary."""
        from .indexer import Indexer, workers_skip_main_script

        with workers_skip_main_script():
            return Indexer(self.source, self.store, plan.source, plan.root, plan.specs, workers,
                           progress).run()

    def build(self, table: str, column: str, methods: Sequence[str] = (), metric: Optional[str] = None,
              pk: Optional[str] = None, root: Optional[str] = None, workers: int = 1,
              progress: Optional[Callable[[int], None]] = None,
              notes: Optional[Callable[[str], None]] = None):
        """Index (incrementally) every row of table; returns the indexer's Summary."""
        plan = self.prepare_build(table, column, methods, metric, pk, root, notes)
        return self.run_build(plan, workers, progress)

    # --- searching --------------------------------------------------------------------

    def index(self, table: str, method: Optional[str] = None) -> IndexSpec:
        return self.store.index(table, method)

    def similar_to_row(self, table: str, pk, k: Any = 10, method: Optional[str] = None,
                       rerank: Optional[str] = None) -> list[Match]:
        """The k rows whose images are nearest to row pk's, nearest first, without it."""
        _, results = search.similar_to_row(self.store, table, pk, k, method, rerank)
        return [Match.from_result(r) for r in results]

    def similar_to_image(self, table: str, data: bytes, k: Any = 10, method: Optional[str] = None,
                         rerank: Optional[str] = None) -> list[Match]:
        """The k rows nearest to an image given as encoded bytes (it need not be indexed)."""
        _, results = search.similar_to_image(self.store, table, data, k, method, rerank)
        return [Match.from_result(r) for r in results]

    @staticmethod
    def embed(spec: IndexSpec, data: bytes):
        """An image's vector for an index (CPU work: a server runs it off its database
        thread, then calls similar_to_vector)."""
        return search.embed_image(spec, data)

    def similar_to_vector(self, spec: IndexSpec, vector, k: Any = 10, rerank: Optional[str] = None,
                          image: Optional[bytes] = None) -> list[Match]:
        """The k rows nearest to a vector from embed(); re-ranking also needs the image."""
        return [Match.from_result(r)
                for r in search.similar_to_vector(self.store, spec, vector, k, rerank, image)]

    def duplicates(self, table: str, method: Optional[str] = None, threshold: Any = None,
                   neighbours: Optional[int] = None):
        """Near-duplicate groups of table (duplicates.Duplicates), best copy first."""
        from .duplicates import DEFAULT_NEIGHBOURS, find_duplicates

        return find_duplicates(self.store, self.store.index(table, method), threshold,
                               neighbours or DEFAULT_NEIGHBOURS)

    def labels(self, table: str, pk) -> list[tuple[str, float]]:
        return self.store.labels(table, pk)

    def status(self) -> list[dict]:
        """One dict per index: table, column, method, metric, dims, indexed, errors, root, updated."""
        return [{"table": spec.table, "column": spec.column, "method": spec.method,
                 "metric": spec.metric, "dims": spec.dims, **self.store.counts(spec),
                 "root": spec.root, "updated": spec.updated_at}
                for spec in self.store.indexes()]


__all__ = ["ImageIndex", "ImgsimError", "Match"]
