"""`datasette imgsim ...` commands: thin over api.ImageIndex; ImgsimError becomes a
one-line message here and nowhere else."""
from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import time

import click

from .api import ImageIndex
from .errors import ImgsimError
from .store import ERRORS_VIEW

INDEX_DB_HELP = ("Separate index database file (default: DATABASE's name + -imgsim.db "
                 "beside it, when that file exists)")


def database_argument(fn):
    return click.argument("database", type=click.Path(dir_okay=False))(fn)


def index_db_option(help: str = INDEX_DB_HELP):
    return click.option("--index-db", type=click.Path(dir_okay=False), help=help)


def json_option(fn):
    return click.option("--json", "as_json", is_flag=True, help="Print JSON")(fn)


def method_option(help: str = "Index to use (default: the table's default index)"):
    return click.option("--method", help=help)


def user_errors(fn):
    """Turn the user's errors into click's one-line message (and exit status 1)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ImgsimError as e:
            raise click.ClickException(str(e)) from None
    return wrapper


@contextlib.contextmanager
def opened(database, index_db=None, write=False):
    index = ImageIndex.open(database, index_db, write=write)
    try:
        yield index
    finally:
        index.close()


def register(cli: click.Group) -> None:
    @cli.group()
    def imgsim():
        "Image similarity: index images in a table, search them, report status"

    @imgsim.command()
    @database_argument
    @click.option("--table", required=True, help="Table or view with one image per row")
    @click.option("--column", required=True, help="Column holding a file path or the image bytes")
    @click.option("--method", "methods", multiple=True,
                  help="Feature method, repeatable (default: cnn)")
    @click.option("--metric", type=click.Choice(["cosine", "l2", "l1"]),
                  help="Distance for float methods (default: each method's own)")
    @click.option("--root", type=click.Path(file_okay=False),
                  help="Directory relative paths are resolved against (default: the database's)")
    @click.option("--pk", help="Column that identifies rows (default: the primary key or rowid)")
    @click.option("--workers", type=click.IntRange(min=1), default=os.cpu_count() or 1,
                  show_default=True, help="Parallel worker processes")
    @index_db_option("Keep the index in this database file and never write to DATABASE, "
                     "for app-owned or read-only databases (default: DATABASE's name + "
                     "-imgsim.db beside it if that file exists, else DATABASE itself)")
    @user_errors
    def index(database, table, column, methods, metric, root, pk, workers, index_db):
        """Extract image features for every row of TABLE into sqlite-vec indexes.

        Incremental: a re-run processes only new or changed rows and drops
        vectors of deleted rows; a killed run continues where it stopped.
        """
        with opened(database, index_db, write=True) as images:
            plan = images.prepare_build(table, column, methods, metric, pk, root,
                                        notes=lambda text: click.echo(text, err=True))
            label = f"Indexing {table} ({', '.join(s.method for s in plan.specs)})"
            with click.progressbar(length=plan.total, label=label, file=sys.stderr, show_pos=True,
                                   item_show_func=lambda s: s) as bar:
                started = time.monotonic()
                done = [0]

                def progress(n):
                    done[0] += n
                    rate = done[0] / max(time.monotonic() - started, 1e-6)
                    bar.update(n, f"{rate:.1f} img/s")

                summary = images.run_build(plan, workers, progress)
        click.echo(
            f"{summary.indexed} indexed, {summary.unchanged} unchanged, {summary.removed} removed, "
            f"{summary.failed} failed, {summary.empty} without image "
            f"in {summary.seconds:.1f}s ({summary.rate:.1f} images/s)"
        )
        for pk_value, message in summary.errors[:10]:
            click.echo(f"  error: {table} {pk_value!r}: {message}", err=True)
        if summary.failed > 10:
            click.echo(f"  ... all errors: select * from {ERRORS_VIEW}", err=True)
        if summary.interrupted:
            click.echo("Interrupted: run the same command again to continue.", err=True)
            sys.exit(130)

    @imgsim.command()
    @database_argument
    @click.argument("image", type=click.Path(dir_okay=False))
    @click.option("--table", required=True)
    @method_option("Index to search (default: the table's default index)")
    @click.option("-k", "k", type=click.IntRange(min=1), default=10, show_default=True)
    @json_option
    @index_db_option()
    @click.option("--rerank", type=click.Choice(["geometric"]),
                  help="Re-rank the nearest candidates by matching local features (SIFT + "
                       "RANSAC); adds an inliers column")
    @user_errors
    def search(database, image, table, method, k, as_json, index_db, rerank):
        """Print the rows of TABLE whose images are nearest to IMAGE."""
        from .images import read_source
        from .source import image_value

        with opened(database, index_db) as images:
            spec = images.index(table, method)
            matches = images.similar_to_image(table, read_source(image), k, method, rerank)
            results = [m.to_dict() for m in matches]
            for result in results:
                try:
                    value = image_value(images.source, spec, result["pk"])
                except ImgsimError:
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
    @database_argument
    @click.option("--table", required=True)
    @method_option()
    @click.option("--threshold", type=float,
                  help="Largest distance between duplicates (default: the method's own, "
                       "e.g. phash 10, cnn 0.05)")
    @click.option("--neighbours", type=click.IntRange(min=1), default=20,
                  show_default=True, help="Nearest neighbours each image links to")
    @json_option
    @index_db_option()
    @user_errors
    def duplicates(database, table, method, threshold, neighbours, as_json, index_db):
        """Group the near-duplicate images of TABLE, best copy first in each group."""
        with opened(database, index_db) as images:
            found = images.duplicates(table, method, threshold, neighbours)
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
    @database_argument
    @json_option
    @index_db_option()
    @user_errors
    def status(database, as_json, index_db):
        """List the image indexes in DATABASE with their row and error counts."""
        with opened(database, index_db) as images:
            rows = images.status()
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
        from .plugins import get_methods

        for method in get_methods().values():
            click.echo(f"{method.name:<10} {method.element_type}[{method.dims}] "
                       f"{method.metric:<8} {method.description}")
