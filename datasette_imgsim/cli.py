"""`datasette imgsim ...` commands: thin over api.ImageIndex; ImgsimError becomes a
one-line message here and nowhere else."""
from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import sys
import time
from typing import Optional

import click

from .api import ImageIndex
from .errors import ImgsimError
from .store import ERRORS_VIEW

INDEX_DB_HELP = ("Separate index database file (default: DATABASE's name + -imgsim.db "
                 "beside it, when that file exists)")


def database_argument(fn):
    return click.argument("database", type=click.Path(dir_okay=False))(fn)


def index_db_option(help: str = INDEX_DB_HELP):
    return click.option("--index-db", help=help)  # a file, or milvus://host:port/db


def json_option(fn):
    return click.option("--json", "as_json", is_flag=True, help="Print JSON")(fn)


def method_option(help: str = "Index to use (default: the table's default index)"):
    return click.option("--method", help=help)


def environment_error(e: BaseException) -> Optional[str]:
    """The one-line message for a failure of the machine rather than of the code: a full
    disk, a database another program holds, a read-only file. None: a bug."""
    text = str(e)
    lowered = text.lower()
    if isinstance(e, OSError) and e.errno == errno.ENOSPC or "disk is full" in lowered:
        return ("the disk is full: the index database could not be written. What was "
                "indexed so far is kept; free some space and run the same command again")
    if "database is locked" in lowered or "database is busy" in lowered:
        return ("the index database is locked by another program (an index run, or an "
                "app with it open): wait for it to finish and run the command again")
    if "readonly database" in lowered or "read-only" in lowered:
        return f"cannot write the index database: {text}"
    if "not a database" in lowered or "malformed" in lowered:
        return f"the index database is not a SQLite database, or is damaged: {text}"
    if isinstance(e, OSError):
        return f"{e.strerror or text}" + (f": {e.filename}" if e.filename else "")
    return None


def user_errors(fn):
    """Turn the user's errors, and the machine's (full disk, locked database), into
    click's one-line message (and exit status 1)."""
    from .store.connection import SQLITE_ERRORS

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ImgsimError as e:
            raise click.ClickException(str(e)) from None
        except (OSError, *SQLITE_ERRORS) as e:
            message = environment_error(e)
            if message is None:
                raise
            raise click.ClickException(message) from None
    return wrapper


def parse_volumes(values) -> dict:
    volumes = {}
    for value in values:
        uuid, sep, path = value.partition("=")
        if not sep or not uuid or not path:
            raise ImgsimError(f"--volume takes UUID=PATH, not {value!r}")
        volumes[uuid.strip()] = path.strip()
    return volumes


@contextlib.contextmanager
def opened(database, index_db=None, write=False, in_place=False):
    index = ImageIndex.open(database, index_db, write=write, in_place=in_place)
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
    @click.option("--table", help="Table or view with one image per row (default: the photo "
                                  "table of the app the database belongs to)")
    @click.option("--column", help="Column holding a file path or the image bytes")
    @click.option("--sql", help="Index the rows of this SELECT (needs --name, --pk, --column); "
                                "stored with the index, never written into DATABASE")
    @click.option("--name", help="Name of an index over --sql (used like a table name)")
    @click.option("--app", help="Photo manager the database belongs to, if not recognised "
                                "(see: datasette imgsim apps)")
    @click.option("--volume", "volumes", multiple=True, metavar="UUID=PATH",
                  help="Where a digiKam volume is mounted, if it cannot be found (repeatable)")
    @click.option("--method", "methods", multiple=True,
                  help="Feature method, repeatable (default: cnn)")
    @click.option("--metric", type=click.Choice(["cosine", "l2", "l1"]),
                  help="Distance for float methods (default: each method's own)")
    @click.option("--root", type=click.Path(file_okay=False),
                  help="Directory relative paths are resolved against (default: the database's)")
    @click.option("--pk", help="Column that identifies rows (default: the primary key or rowid)")
    @click.option("--workers", type=click.IntRange(min=1), default=os.cpu_count() or 1,
                  show_default=True, help="Parallel worker processes")
    @index_db_option("Keep the index in this database file (default: DATABASE's name + "
                     "-imgsim.db beside it)")
    @click.option("--in-place", is_flag=True,
                  help="Keep the index inside DATABASE itself (default: a sidecar beside it, "
                       "so a database the plugin did not create is never written to)")
    @click.option("--rebuild", is_flag=True,
                  help="Build the named methods' indexes again from scratch (e.g. with a newer "
                       "embedding version, as status suggests)")
    @user_errors
    def index(database, table, column, sql, name, app, volumes, methods, metric, root, pk, workers,
              index_db, in_place, rebuild=False):
        """Extract image features for every photo of DATABASE into sqlite-vec indexes.

        With no --table, a photo manager's database (digiKam, Shotwell, darktable,
        Lightroom Classic, dogsheep-photos) or a database with one photo table is
        recognised and its photos listed without any SQL. Incremental: a re-run
        processes only new or changed rows and drops vectors of deleted rows; a killed
        run continues where it stopped.
        """
        from .indexer import MAX_WORKERS, worker_cap

        if worker_cap(workers) < workers:
            click.echo(f"--workers {workers}: using {worker_cap(workers)} (at most twice the "
                       f"{os.cpu_count()} cores, and {MAX_WORKERS}: more only cost memory)",
                       err=True)
            workers = worker_cap(workers)
        with opened(database, index_db, write=True, in_place=in_place) as images:
            plan = images.prepare_build(table, column, methods, metric, pk, root,
                                        notes=lambda text: click.echo(text, err=True), sql=sql,
                                        name=name, app=app, volumes=parse_volumes(volumes),
                                        rebuild=rebuild)
            where = ("" if images.store.conn is images.source
                     else f" into {images.store.conn.execute('pragma database_list').fetchone()[2]}")
            if plan.app and plan.app != "generic":
                click.echo(f"{plan.app}: indexing {plan.source.table} ({plan.total} photos){where}",
                           err=True)
            for root_added in plan.roots:
                click.echo(f"images may be served from: {root_added}", err=True)
            label = f"Indexing {plan.source.table} ({', '.join(s.method for s in plan.specs)})"
            with click.progressbar(length=plan.total, label=label, file=sys.stderr, show_pos=True,
                                   item_show_func=lambda s: s) as bar:
                started = time.monotonic()
                done = [0]

                def progress(n):
                    done[0] += n
                    rate = done[0] / max(time.monotonic() - started, 1e-6)
                    bar.update(n, f"{rate:.1f} img/s")

                summary = images.run_build(plan, workers, progress)
            still_failing = sum(images.store.counts(spec)["errors"] for spec in plan.specs)
        click.echo(
            f"{summary.indexed} indexed, {summary.unchanged} unchanged, {summary.removed} removed, "
            f"{summary.failed} failed, {summary.empty} without image "
            f"in {summary.seconds:.1f}s ({summary.rate:.1f} images/s)"
        )
        for note in summary.notes:
            click.echo(note, err=True)
        for pk_value, message in summary.errors[:10]:
            click.echo(f"  error: {plan.source.table} {pk_value!r}: {message}", err=True)
        if still_failing:
            click.echo(f"{still_failing} rows have errors: datasette imgsim status {database} "
                       f"--errors (or select * from {ERRORS_VIEW})", err=True)
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

    from .cli_duplicates import add_duplicates_command

    add_duplicates_command(imgsim)

    @imgsim.command()
    @database_argument
    @json_option
    @index_db_option()
    @click.option("--errors", "show_errors", is_flag=True, help="List the rows that failed, and why")
    @user_errors
    def status(database, as_json, index_db, show_errors):
        """List the image indexes of DATABASE: rows, errors, and the folders images are served from."""
        with opened(database, index_db) as images:
            rows = images.status()
            errors = images.errors() if show_errors else []
        if as_json:
            click.echo(json.dumps({"indexes": rows, "errors": errors} if show_errors else rows,
                                  indent=2, default=str))
            return
        if not rows:
            click.echo("No image indexes. Create one with: datasette imgsim index DB")
            return
        headers = ["table", "column", "method", "metric", "dims", "indexed", "errors", "updated"]
        cells = [[str(r[h]) for h in headers] for r in rows]
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
        for line in [headers] + cells:
            click.echo("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip())
        for table in dict.fromkeys(r["table"] for r in rows):
            roots = next(r["roots"] for r in rows if r["table"] == table)
            click.echo(f"{table}: images served from {', '.join(roots) or '(no folder: BLOBs only)'}")
        for row in rows:
            if row["rebuild_suggested"]:
                click.echo(f"{row['table']} {row['method']}: {row['rebuild_suggested']}")
        for error in errors:
            click.echo(f"  error: {error['table']} {error['method']} {error['pk']!r}: {error['error']}")

    @imgsim.command()
    @database_argument
    @click.option("--table", help="Only this table's (or index name's) indexes")
    @method_option("Only this method's index")
    @index_db_option()
    @user_errors
    def drop(database, table, method, index_db):
        """Remove image indexes from DATABASE's index database (vec0 tables included)."""
        with opened(database, index_db, write=True) as images:
            dropped = images.drop(table, method)
        click.echo(f"dropped {len(dropped)} index{'es' if len(dropped) != 1 else ''}"
                   + "".join(f"\n  {s.table} {s.method}" for s in dropped))

    @imgsim.command()
    @database_argument
    @click.option("--table", required=True, help="Table or index name")
    @click.option("--add", "add", multiple=True, type=click.Path(file_okay=False),
                  help="Allow image files under this folder (repeatable)")
    @click.option("--remove", "remove", multiple=True, help="Stop allowing this folder")
    @index_db_option()
    @user_errors
    def roots(database, table, add, remove, index_db):
        """List or change the folders TABLE's image files may be served from (no rebuild)."""
        with opened(database, index_db, write=bool(add or remove)) as images:
            for folder in add:
                click.echo(f"added {images.add_root(table, folder)}")
            for folder in remove:
                images.remove_root(table, folder)
                click.echo(f"removed {folder}")
            for root in images.roots(table):
                click.echo(root)

    @imgsim.command()
    @click.argument("folder", type=click.Path(file_okay=False))
    @database_argument
    @click.option("--table", default="photos", show_default=True, help="Table of photos to write")
    @click.option("--method", "methods", multiple=True,
                  help="Feature method, repeatable (default: cnn)")
    @click.option("--workers", type=click.IntRange(min=1), default=os.cpu_count() or 1,
                  show_default=True, help="Parallel worker processes")
    @click.option("--no-index", is_flag=True, help="Only bring the table up to date")
    @user_errors
    def scan(folder, database, table, methods, workers, no_index):
        """Make (or bring up to date) a table of the photos under FOLDER in DATABASE, with
        their EXIF facts (date, camera, lens, GPS), then index it.

        Incremental: new, changed and removed files; latitude/longitude columns put the
        photos on a map with datasette-cluster-map."""
        from .scan import scan_folder

        with click.progressbar(length=1, label=f"Scanning {folder}", file=sys.stderr,
                               show_pos=True) as bar:
            def progress(done, total):
                bar.length = max(total, 1)
                bar.update(done - bar.pos)

            found = scan_folder(folder, database, table, progress=progress)
        click.echo(f"{found.added} added, {found.updated} updated, {found.removed} removed, "
                   f"{found.unchanged} unchanged, {found.failed} failed ({found.seconds:.1f}s)")
        for path, message in found.errors[:20]:
            click.echo(f"  {path}: {message}", err=True)
        if no_index:
            return
        # The table is the plugin's own: its index lives beside it in the same database.
        ctx = click.get_current_context()
        ctx.invoke(index, database=database, table=table, column="path", methods=methods,
                   workers=workers, in_place=True, volumes=(), sql=None, name=None, app=None,
                   metric=None, root=None, pk=None, index_db=None)

    @imgsim.command()
    def apps():
        """List the photo managers whose databases are recognised."""
        from . import apps as presets

        for preset in presets.list_apps():
            click.echo(f"{preset.name:<10} {preset.title}: {preset.description}")

    @imgsim.command()
    def methods():
        """List the available feature methods."""
        from .plugins import get_methods

        for method in get_methods().values():
            click.echo(f"{method.name:<10} {method.element_type}[{method.dims}] "
                       f"{method.metric:<8} {method.description}")
