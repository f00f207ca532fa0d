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
    from .web.upload_page import human_size

    env.filters["imgsim_size"] = human_size  # 20971520 -> "20 MB"


@hookimpl
def prepare_connection(conn, database, datasette):
    from . import sql
    from .store import ExtensionUnavailable, load_sqlite_vec, map_indexes
    from .store.factory import serve_with
    from .store.milvus import is_milvus
    from .store.sidecar import attach_served
    from .web.render import config

    try:
        load_sqlite_vec(conn)
    except ExtensionUnavailable:
        # startup() reports it once; the SQL functions still register and explain.
        pass
    db = datasette.databases.get(database)
    index_db = config(datasette, database).get("index_db")
    if is_milvus(index_db):
        # Vectors in Milvus, the catalogue in the conventional sidecar beside the database.
        serve_with(getattr(db, "path", None), index_db)
        index_db = None
    attach_served(conn, getattr(db, "path", None), index_db)
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
    # Decodes in killable worker processes, one-line SQL errors, index files warmed.
    from . import server

    server.start(datasette)


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


# The _imgsim_ tables follow their source tables' permissions (web/permissions.py).
# Datasette 0.65: the last answer that is not None wins, so this one runs last.
@hookimpl(trylast=True)
def permission_allowed(datasette, actor, action, resource):
    from .web.permissions import index_table_allowed

    return index_table_allowed(datasette, actor, action, resource)


# Datasette 1.0a: a child-level deny beats any allow.
@hookimpl
def permission_resources_sql(datasette, actor, action):
    from .web.permissions import index_table_rules

    return index_table_rules(datasette, actor, action)


# A plugin route asked for .json answers a 403 in JSON on both lines.
@hookimpl
def forbidden(datasette, request, message):
    from .web.permissions import forbidden_response

    return forbidden_response(request, message)


# Datasette 0.65 only: see web/upload.py's check_form_csrf.
@hookimpl
def skip_csrf(datasette, scope):
    from .web import upload

    return upload.skip_csrf(datasette, scope)


# Both lines: the table page's gallery link (and image_column_first), 0.65's row strip.
@hookimpl
def extra_body_script(template, database, table, columns, view_name, request, datasette):
    from .web import pagehooks

    return pagehooks.extra_body_script(datasette, database, table, columns, view_name, request)


# Datasette 1.0a only: the similar strip on the row page.
@hookimpl
def top_row(datasette, request, database, table, row):
    from .web import strip

    return strip.top_row(datasette, request, database, table, row)


# Datasette 0.65 only (1.0a hides _imgsim_ tables itself): hidden-table metadata.
@hookimpl
def get_metadata(datasette, key, database, table):
    from .web import pagehooks

    return pagehooks.hidden_metadata(datasette, database)
