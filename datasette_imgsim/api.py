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
from .errors import ImgsimError, NotFound, SourceError, SourceLocked
from .store import IndexSpec, Store, connect, quote_identifier
from .store.factory import backend_for
from .store.milvus import is_milvus
from .store.sidecar import attach, find_sidecar, sidecar_path


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
    """An index run checked and ready: what it reads, where relative paths start, the
    indexes it fills, the row count, the roots it allowed and what the user should know."""

    source: Any
    root: str
    specs: list
    total: int
    roots: tuple = ()
    app: Optional[str] = None
    notes: tuple = ()


# An app holding its catalogue open (Lightroom locks it exclusively) answers "busy":
# say so after a few seconds rather than SQLite's default wait.
BUSY_SECONDS = 5.0


def open_source(db_path: str, readonly: bool = True):
    """A connection to a photo database, checked readable now: a locked or non-SQLite file
    gets a one-line message instead of a traceback later."""
    from datasette.utils.sqlite import sqlite3

    conn = connect(db_path, readonly=readonly, timeout=BUSY_SECONDS)
    try:
        conn.execute("select count(*) from sqlite_master").fetchone()
    except sqlite3.OperationalError as e:
        conn.close()
        if "locked" in str(e) or "busy" in str(e):
            raise SourceLocked(f"{db_path} is locked by another program: close the app that has "
                               "it open (Lightroom, digiKam...), or index a copy") from None
        raise SourceError(f"cannot read {db_path}: {e}") from None
    except sqlite3.DatabaseError as e:
        conn.close()
        raise SourceError(f"{db_path} is not a SQLite database ({e})") from None
    return conn


def has_own_index(conn) -> bool:
    return bool(conn.execute(
        "select 1 from main.sqlite_master where name = '_imgsim_indexes'").fetchone())


def lock_holder(path) -> Optional[int]:
    """The process holding a flock on path, from /proc/locks (Linux), if it can be told."""
    try:
        inode = os.stat(path).st_ino
        with open("/proc/locks") as f:
            for line in f:
                fields = line.split()
                if "FLOCK" in fields:
                    at = fields.index("FLOCK")
                    pid, where = fields[at + 3], fields[at + 4]
                    if where.rsplit(":", 1)[-1] == str(inode) and pid.isdigit():
                        return int(pid)
    except (OSError, ValueError, IndexError):
        pass
    return None


def rebuild_suggestion(spec: IndexSpec) -> Optional[str]:
    """What a rebuild would bring, when the index was built with an older embedding."""
    from .plugins import get_methods

    method = get_methods().get(spec.method)
    built = spec.params.get("embedding_version", 1)
    if method is None or built >= method.version:
        return None
    return (f"built with {spec.method} embedding version {built}; version {method.version} "
            "finds copies of wide, tall and bordered photos and heavily edited copies better: "
            f"rebuild with --method {spec.method} --rebuild")


class ImageIndex:
    """The image indexes of one photo database: in it, or in its sidecar index database.

    `source` is a connection to the photo database (read-only unless the index lives in
    it); `store` is the Store of the database that holds the index."""

    def __init__(self, source, store: Store, database_path: Optional[str] = None,
                 created: Optional[Path] = None):
        self.source = source
        self.store = store
        self.database_path = database_path
        self.index_db: Optional[str] = None  # as given to open() (worker processes reopen it)
        self.created = created  # an index database this object made (removed if left empty)

    @classmethod
    def open(cls, db_path, index_db: Optional[str] = None, write: bool = False,
             in_place: bool = False) -> "ImageIndex":
        """The indexes of the photo database at db_path (its sidecar is attached when it
        has one). write=True opens the database that holds the index for writing: by
        default a sidecar beside db_path (NAME-imgsim.db), never db_path itself, unless
        in_place=True or db_path already holds an index of its own."""
        opened = cls._open(str(db_path), index_db, write, in_place)
        opened.index_db = index_db
        return opened

    @classmethod
    def _open(cls, db_path: str, index_db: Optional[str], write: bool,
              in_place: bool) -> "ImageIndex":
        if not Path(db_path).exists():
            raise NotFound(f"database file not found: {db_path}")
        vectors = None  # where the vectors live, when not in the index database (Milvus)
        if is_milvus(index_db):
            vectors, index_db = index_db, str(sidecar_path(db_path))
        if not write:
            sidecar = find_sidecar(db_path, index_db)
            if sidecar is None:
                conn = open_source(db_path)
                return cls(conn, Store(conn), db_path)
            if not sidecar.exists():
                raise NotFound(f"index database not found: {sidecar}")
            source = open_source(db_path)
            attach(source, sidecar)
            return cls(source, Store(source, vectors and backend_for(source, vectors)), db_path)
        source = open_source(db_path)
        if index_db is None and (in_place or has_own_index(source)):
            source.close()
            conn = open_source(db_path, readonly=False)
            return cls(conn, Store(conn), db_path)
        sidecar = find_sidecar(db_path, index_db) or sidecar_path(db_path)
        if sidecar.resolve() == Path(db_path).resolve():
            source.close()
            conn = open_source(db_path, readonly=False)
            return cls(conn, Store(conn), db_path)
        if not sidecar.parent.is_dir():
            source.close()
            raise NotFound(f"folder for the index database not found: {sidecar.parent}")
        created = None if sidecar.exists() else sidecar
        try:
            conn = connect(str(sidecar))
            store = Store(conn, vectors and backend_for(conn, vectors))
        except ImgsimError:
            source.close()
            raise
        except Exception as e:
            source.close()
            raise SourceError(f"cannot open index database {sidecar}: {e}") from None
        return cls(source, store, db_path, created)

    @classmethod
    def over(cls, conn) -> "ImageIndex":
        """The indexes reachable from an open connection (Datasette's, with any sidecar
        already attached): for SQL functions and pages."""
        return cls(conn, Store(conn))

    def lock_for_writing(self, notify: Optional[Callable[[str], None]] = None,
                         wait: bool = True) -> None:
        """Hold the index database for one index run at a time (an advisory lock on its
        file, released when this object closes or its process dies). A second run waits
        for the first, saying which process holds it (wait=False: SourceLocked)."""
        if getattr(self, "_lock_fd", None) is not None:
            return
        try:
            import fcntl
        except ImportError:  # not on Windows: SQLite's own locking only
            return
        path = self.store.conn.execute("pragma database_list").fetchone()[2]
        if not path:
            return
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock_holder(path)
            message = (f"another index run{f' (process {holder})' if holder else ''} "
                       f"is writing to {path}")
            if not wait:
                os.close(fd)
                raise SourceLocked(f"{message}: wait for it to finish") from None
            if notify:
                notify(f"{message}: waiting for it to finish...")
            fcntl.flock(fd, fcntl.LOCK_EX)
        self._lock_fd = fd

    def close(self) -> None:
        """Close the connections; an index database this object created and never filled
        (a run that stopped on a locked source or a bad name) is removed."""
        if getattr(self, "_lock_fd", None) is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        empty = self.created is not None and not self.store.indexes()
        for conn in {id(c): c for c in (self.source, self.store.conn)}.values():
            conn.close()
        if empty:
            for suffix in ("", "-wal", "-shm"):
                Path(str(self.created) + suffix).unlink(missing_ok=True)

    def __enter__(self) -> "ImageIndex":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- building ---------------------------------------------------------------------

    def prepare_build(self, table: Optional[str] = None, column: Optional[str] = None,
                      methods: Sequence[str] = (), metric: Optional[str] = None,
                      pk: Optional[str] = None, root: Optional[str] = None,
                      notes: Optional[Callable[[str], None]] = None, sql: Optional[str] = None,
                      name: Optional[str] = None, app: Optional[str] = None,
                      volumes: Optional[dict] = None, rebuild: bool = False) -> BuildPlan:
        """Check what to index (a table and column, a query, or the database's app preset)
        and create (or redefine) the indexes, before any image is read."""
        from .files import check_root
        from .plugins import default_method_name, get_method
        from .selection import derived_roots, select
        from .source import check_keys, count_rows, default_root

        self.lock_for_writing(notes)
        chosen = [get_method(name) for name in (methods or [default_method_name()])]
        for method in chosen:
            wanted = metric if (metric and method.element_type == "float") else method.metric
            if wanted not in method.metrics:
                raise SourceError(f"{method.name} does not support metric {wanted!r}")
        selection = select(self.source, table, column, pk, sql, name, app, volumes)
        source = selection.source
        check_keys(self.source, source, unique=not self._declared_key(source))
        if root:
            root = check_root(root)
        elif self.database_path:
            root = default_root(self.database_path)
        else:
            root = os.getcwd()
        for note in selection.notes:
            if notes:
                notes(note)
        specs = []
        for method in chosen:
            wanted = metric if (metric and method.element_type == "float") else method.metric
            # The embedding version is recorded once, at creation: an index built with an
            # older one keeps it (status suggests the rebuild) rather than mixing versions.
            params = {"embedding_version": method.version}
            if selection.source_params:
                params["source"] = selection.source_params
            if rebuild:
                for existing in self.store.indexes(source.table):
                    if existing.method == method.name:
                        self.store.drop_index(existing)
                        if notes:
                            notes(f"{method.name}: rebuilding")
            spec, note = self.store.create_index(source.table, source.column, source.pk, root,
                                                 method.name, wanted, method.dims,
                                                 method.element_type, params)
            if note and notes:
                notes(f"{method.name}: {note}")
            specs.append(spec)
        roots = tuple(selection.roots) or derived_roots(self.source, source, root)
        added = self.store.add_roots(source.table, roots)
        return BuildPlan(source, root, specs, count_rows(self.source, source), tuple(added),
                         selection.app, selection.notes)

    def _declared_key(self, source) -> bool:
        """Whether source's key is its table's single-column primary key (unique already)."""
        if source.sql:
            return False
        try:
            info = self.source.execute(
                f"pragma table_info({quote_identifier(source.table)})").fetchall()
        except Exception:
            return False
        keys = [r[1] for r in info if r[5]]
        return keys == [source.pk]

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
                   neighbours: Optional[int] = None, verify: bool = True, workers: int = 1,
                   **options):
        """Duplicate groups of table (duplicates.Duplicates), best copy first.

        verify=True (the default): candidate pairs from every index of the table (or
        method's alone), verified as copies (finder.verified_duplicates: options seconds,
        memo, extra_roots, save, progress); verdicts are kept in the index database.
        verify=False: grouped by a bare distance threshold of one index."""
        from .duplicates import DEFAULT_NEIGHBOURS, find_duplicates

        spec = self.store.index(table, method)
        if not verify:
            return find_duplicates(self.store, spec, threshold, neighbours or DEFAULT_NEIGHBOURS)
        specs = [spec] if method else [spec] + [s for s in self.store.indexes(table)
                                                if s.id != spec.id]
        opener = (self.database_path, self.index_db) if self.database_path else None
        return find_duplicates(self.store, spec, threshold, neighbours or DEFAULT_NEIGHBOURS,
                               verify=True, specs=specs, source_conn=self.source,
                               workers=workers, opener=opener, **options)

    def labels(self, table: str, pk) -> list[tuple[str, float]]:
        return self.store.labels(table, pk)

    def status(self) -> list[dict]:
        """One dict per index: table (the index name), column, method, metric, dims,
        indexed, errors, root, roots (the folders files may be served from), app, updated."""
        return [{"table": spec.table, "column": spec.column, "method": spec.method,
                 "metric": spec.metric, "dims": spec.dims, **self.store.counts(spec),
                 "root": spec.root, "roots": self.store.roots(spec.table),
                 "app": spec.source.get("app"), "updated": spec.updated_at,
                 "embedding_version": spec.params.get("embedding_version", 1),
                 "rebuild_suggested": rebuild_suggestion(spec)}
                for spec in self.store.indexes()]

    def errors(self, limit: int = 100) -> list[dict]:
        """The rows that could not be indexed: table, method, pk, error."""
        return [{"table": spec.table, "method": spec.method, "pk": pk, "error": error}
                for spec in self.store.indexes() for pk, error in self.store.errors(spec, limit)]

    def drop(self, table: Optional[str] = None, method: Optional[str] = None) -> list[IndexSpec]:
        """Remove indexes (all, a table's, or one method's), vec0 tables included."""
        specs = [s for s in self.store.indexes(table) if method is None or s.method == method]
        if (table or method) and not specs:
            raise NotFound("no such index" + (f": table {table!r}" if table else "")
                           + (f", method {method!r}" if method else ""))
        for spec in specs:
            self.store.drop_index(spec)
        if table is None and method is None:
            self.store.drop_all()
        return specs

    def roots(self, table: str) -> list[str]:
        return self.store.roots(table)

    def add_root(self, table: str, folder: str) -> str:
        from .files import check_root

        self.store.index(table)  # NotFound for a name that has no index
        root = check_root(folder)
        self.store.add_roots(table, [root], origin="user")
        return root

    def remove_root(self, table: str, folder: str) -> None:
        import os

        if not self.store.remove_root(table, os.path.normpath(os.path.abspath(folder))):
            raise NotFound(f"{folder} is not a stored root of {table!r} "
                           "(an index's own root changes with index --root)")


__all__ = ["ImageIndex", "ImgsimError", "Match"]
