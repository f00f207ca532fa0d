"""Datasette hook implementations: each a few lines over the modules that do the work.

The public Python API (api.py) is re-exported here: `from datasette_imgsim import ImageIndex`.
"""
from pathlib import Path

from datasette import hookimpl

__all__ = ["ImageIndex", "ImgsimError", "Match"]

# Modules are imported inside the hooks that use them, and the API on first use: importing
# this package is then cheap, which indexing worker processes pay on every run.


def __getattr__(name):
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def templates_dir() -> Path:
    """The pages' templates: inside the package in a wheel, at the top of a checkout."""
    packaged = Path(__file__).parent / "templates"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "templates"


@hookimpl
def prepare_jinja2_environment(env, datasette):
    # Datasette finds a plugin's templates/ inside its package, which is where the wheel
    # puts them; a checkout keeps them at the top level (the design card), without a
    # symlink, so they are added here.
    from jinja2 import ChoiceLoader, FileSystemLoader

    env.loader = ChoiceLoader([env.loader, FileSystemLoader(str(templates_dir()))])


@hookimpl
def prepare_connection(conn, database, datasette):
    from . import sql
    from .store import ExtensionUnavailable, load_sqlite_vec, map_indexes
    from .store.sidecar import attach_served
    from .web.render import config

    try:
        load_sqlite_vec(conn)
    except ExtensionUnavailable:
        # startup() reports it once; the SQL functions still register and explain.
        pass
    db = datasette.databases.get(database)
    attach_served(conn, getattr(db, "path", None), config(datasette, database).get("index_db"))
    map_indexes(conn)
    sql.register_functions(conn)


@hookimpl
def register_commands(cli):
    from .cli import register

    register(cli)


@hookimpl
def startup(datasette):
    from datasette.utils.sqlite import sqlite3

    from .store import ExtensionUnavailable, load_sqlite_vec

    try:
        load_sqlite_vec(sqlite3.connect(":memory:"))
    except ExtensionUnavailable as e:
        import sys

        print(f"datasette-imgsim: {e}", file=sys.stderr)


@hookimpl
def register_routes():
    from .web import routes

    return routes()


# Only arguments both Datasette 0.65 and 1.0a pass: a 1.0a-only one (request)
# would stop the plugin loading on 0.65.
@hookimpl
def render_cell(row, value, column, table, database, datasette):
    from .web import decorations

    return decorations.render_cell(datasette, database, table, column, row, value)


@hookimpl
def table_actions(datasette, database, table):
    from .web import decorations

    return decorations.table_actions(datasette, database, table)


# Datasette 1.0a only; on 0.65 the image cell on the row page links to the same page.
@hookimpl
def row_actions(datasette, database, table, row):
    from .web import decorations

    return decorations.row_actions(datasette, database, table, row)


# Datasette 0.65 only: see web/upload.py's check_form_csrf.
@hookimpl
def skip_csrf(datasette, scope):
    from .web import upload

    return upload.skip_csrf(datasette, scope)
