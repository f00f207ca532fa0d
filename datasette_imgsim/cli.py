"""`datasette imgsim ...` commands: thin over source, indexer, search and store."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Optional

import click

from .duplicates import DEFAULT_NEIGHBOURS, DuplicatesError, find_duplicates
from .images import ImageError, read_source
from .indexer import Indexer, workers_skip_main_script
from .plugins import UnknownMethod, get_method, get_methods
from .search import SearchError, similar_to_image
from .source import SourceError, count_rows, default_root, describe_source, image_value
from .sidecar import attach, find_sidecar
from .store import ExtensionUnavailable, NotFound, Store, connect

DEFAULT_METHOD = "cnn"


def open_db(path: str, readonly: bool = False):
    if not Path(path).exists():
        raise click.ClickException(f"database file not found: {path}")
    try:
        return connect(path, readonly=readonly)
    except ExtensionUnavailable as e:
        raise click.ClickException(str(e)) from None


def open_index(database: str, index_db: Optional[str] = None):
    """A read-only connection to DATABASE with its sidecar index attached, if it has one."""
    conn = open_db(database, readonly=True)
    sidecar = find_sidecar(database, index_db)
    if sidecar is not None:
        if not sidecar.exists():
            raise click.ClickException(f"index database not found: {sidecar}")
        attach(conn, sidecar)
    return conn


INDEX_DB_HELP = ("Separate index database file (default: DATABASE's name + -imgsim.db "
                 "beside it, when that file exists)")


def register(cli: click.Group) -> None:
    @cli.group()
    def imgsim():
        "Image similarity: index images in a table, search them, report status"

    @imgsim.command()
    @click.argument("database", type=click.Path(dir_okay=False))
    @click.option("--table", required=True, help="Table or view with one image per row")
    @click.option("--column", required=True, help="Column holding a file path or the image bytes")
    @click.option("--method", "methods", multiple=True,
                  help=f"Feature method, repeatable (default: {DEFAULT_METHOD})")
    @click.option("--metric", type=click.Choice(["cosine", "l2", "l1"]),
                  help="Distance for float methods (default: each method's own)")
    @click.option("--root", type=click.Path(file_okay=False),
                  help="Directory relative paths are resolved against (default: the database's)")
    @click.option("--pk", help="Column that identifies rows (default: the primary key or rowid)")
    @click.option("--workers", type=click.IntRange(min=1), default=os.cpu_count() or 1,
                  show_default=True, help="Parallel worker processes")
    @click.option("--index-db", type=click.Path(dir_okay=False),
                  help="Keep the index in this database file and never write to DATABASE, "
                       "for app-owned or read-only databases (default: DATABASE's name + "
                       "-imgsim.db beside it if that file exists, else DATABASE itself)")
    def index(database, table, column, methods, metric, root, pk, workers, index_db):
        """Extract image features for every row of TABLE into sqlite-vec indexes.

        Incremental: a re-run processes only new or changed rows and drops
        vectors of deleted rows; a killed run continues where it stopped.
        """
        sidecar = find_sidecar(database, index_db)
        if sidecar is None:
            conn = store_conn = open_db(database)
        else:
            conn = open_db(database, readonly=True)
            try:
                store_conn = connect(str(sidecar))
            except (ExtensionUnavailable, OSError) as e:
                raise click.ClickException(f"cannot open index database {sidecar}: {e}") from None
        try:
            methods = [get_method(name) for name in (methods or [DEFAULT_METHOD])]
            source = describe_source(conn, table, column, pk)
        except (UnknownMethod, SourceError) as e:
            raise click.ClickException(str(e)) from None
        root = str(Path(root).resolve()) if root else default_root(database)
        store = Store(store_conn)
        specs = []
        for method in methods:
            chosen = metric if (metric and method.element_type == "float") else method.metric
            if chosen not in method.metrics:
                raise click.ClickException(f"{method.name} does not support metric {chosen!r}")
            spec, note = store.create_index(table, column, source.pk, root, method.name, chosen,
                                            method.dims, method.element_type)
            if note:
                click.echo(f"{method.name}: {note}", err=True)
            specs.append(spec)
        total = count_rows(conn, source)
        label = f"Indexing {table} ({', '.join(m.name for m in methods)})"
        with click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True,
                               item_show_func=lambda s: s) as bar:
            started = time.monotonic()
            done = [0]

            def progress(n):
                done[0] += n
                rate = done[0] / max(time.monotonic() - started, 1e-6)
                bar.update(n, f"{rate:.1f} img/s")

            with workers_skip_main_script():
                summary = Indexer(conn, store, source, root, specs, workers, progress).run()
        click.echo(
            f"{summary.indexed} indexed, {summary.unchanged} unchanged, {summary.removed} removed, "
            f"{summary.failed} failed, {summary.empty} without image "
            f"in {summary.seconds:.1f}s ({summary.rate:.1f} images/s)"
        )
        for pk_value, message in summary.errors[:10]:
            click.echo(f"  error: {table} {pk_value!r}: {message}", err=True)
        if summary.failed > 10:
            click.echo("  ... all errors: select * from _imgsim_errors", err=True)
        if summary.interrupted:
            click.echo("Interrupted: run the same command again to continue.", err=True)
            sys.exit(130)

    @imgsim.command()
    @click.argument("database", type=click.Path(dir_okay=False))
    @click.argument("image", type=click.Path(dir_okay=False))
    @click.option("--table", required=True)
    @click.option("--method", help="Index to search (default: the table's default index)")
    @click.option("-k", "k", type=click.IntRange(min=1), default=10, show_default=True)
    @click.option("--json", "as_json", is_flag=True, help="Print JSON")
    @click.option("--index-db", type=click.Path(dir_okay=False), help=INDEX_DB_HELP)
    @click.option("--rerank", type=click.Choice(["geometric"]),
                  help="Re-rank the nearest candidates by matching local features (SIFT + "
                       "RANSAC); adds an inliers column")
    def search(database, image, table, method, k, as_json, index_db, rerank):
        """Print the rows of TABLE whose images are nearest to IMAGE."""
        conn = open_index(database, index_db)
        store = Store(conn)
        try:
            spec, results = similar_to_image(store, table, read_source(image), k, method, rerank)
        except (NotFound, SearchError, ImageError, UnknownMethod) as e:
            raise click.ClickException(str(e)) from None
        for result in results:
            try:
                value = image_value(conn, spec, result["pk"])
            except NotFound:
                value = None
            result["image"] = f"<{len(value)} byte BLOB>" if isinstance(value, bytes) else value
        if as_json:
            click.echo(json.dumps({"table": table, "method": spec.method, "metric": spec.metric,
                                   "results": results}, indent=2))
            return
        for result in results:
            inliers = f"\t{result['inliers']}" if "inliers" in result else ""
            click.echo(f"{result['pk']}\t{result['distance']:.4f}{inliers}\t{result['image']}")

    @imgsim.command()
    @click.argument("database", type=click.Path(dir_okay=False))
    @click.option("--table", required=True)
    @click.option("--method", help="Index to use (default: the table's default index)")
    @click.option("--threshold", type=float,
                  help="Largest distance between duplicates (default: the method's own, "
                       "e.g. phash 10, cnn 0.05)")
    @click.option("--neighbours", type=click.IntRange(min=1), default=DEFAULT_NEIGHBOURS,
                  show_default=True, help="Nearest neighbours each image links to")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON")
    @click.option("--index-db", type=click.Path(dir_okay=False), help=INDEX_DB_HELP)
    def duplicates(database, table, method, threshold, neighbours, as_json, index_db):
        """Group the near-duplicate images of TABLE, best copy first in each group."""
        store = Store(open_index(database, index_db))
        try:
            found = find_duplicates(store, store.index(table, method), threshold, neighbours)
        except (NotFound, DuplicatesError) as e:
            raise click.ClickException(str(e)) from None
        if as_json:
            click.echo(json.dumps(found.to_dict(), indent=2, default=str))
            return
        click.echo(f"{len(found.groups)} groups of near-duplicates among {found.indexed} images "
                   f"({found.method}, threshold {found.threshold:g}, {found.seconds:.1f}s)")
        for number, group in enumerate(found.groups, start=1):
            click.echo(f"\nGroup {number}")
            for m in group.members:
                dims = f"{m.width}x{m.height}" if m.width else "?"
                size = f"{m.size:,} B" if m.size is not None else "?"
                image = m.image if m.image is not None else "<BLOB>"
                click.echo(f"  {m.pk}\t{m.distance:.4g}\t{m.kind:<12}\t{dims}\t{size}\t{image}")

    @imgsim.command()
    @click.argument("database", type=click.Path(dir_okay=False))
    @click.option("--json", "as_json", is_flag=True, help="Print JSON")
    @click.option("--index-db", type=click.Path(dir_okay=False), help=INDEX_DB_HELP)
    def status(database, as_json, index_db):
        """List the image indexes in DATABASE with their row and error counts."""
        store = Store(open_index(database, index_db))
        rows = []
        for spec in store.indexes():
            rows.append({"table": spec.table, "column": spec.column, "method": spec.method,
                         "metric": spec.metric, "dims": spec.dims, **store.counts(spec),
                         "root": spec.root, "updated": spec.updated_at})
        if as_json:
            click.echo(json.dumps(rows, indent=2))
            return
        if not rows:
            click.echo("No image indexes. Create one with: datasette imgsim index DB --table T --column C")
            return
        headers = ["table", "column", "method", "metric", "dims", "indexed", "errors", "updated"]
        cells = [[str(r[h]) for h in headers] for r in rows]
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
        for line in [headers] + cells:
            click.echo("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip())

    @imgsim.command()
    def methods():
        """List the available feature methods."""
        for method in get_methods().values():
            click.echo(f"{method.name:<10} {method.element_type}[{method.dims}] "
                       f"{method.metric:<8} {method.description}")
