"""Datasette hook implementations: each a few lines over the modules that do the work."""
from datasette import hookimpl

from . import sql, views
from .cli import register as register_cli
from .sidecar import attach_served
from .store import ExtensionUnavailable, load_sqlite_vec, map_indexes


@hookimpl
def prepare_connection(conn, database, datasette):
    try:
        load_sqlite_vec(conn)
    except ExtensionUnavailable:
        # startup() reports it once; the SQL functions still register and explain.
        pass
    attach_served(conn, datasette, database)
    map_indexes(conn)
    sql.register_functions(conn)


@hookimpl
def register_commands(cli):
    register_cli(cli)


@hookimpl
def startup(datasette):
    from datasette.utils.sqlite import sqlite3

    try:
        load_sqlite_vec(sqlite3.connect(":memory:"))
    except ExtensionUnavailable as e:
        import sys

        print(f"datasette-imgsim: {e}", file=sys.stderr)


@hookimpl
def register_routes():
    from . import duplicates_view

    return views.routes() + [duplicates_view.route()]


# Only arguments both Datasette 0.65 and 1.0a pass: a 1.0a-only one (request)
# would stop the plugin loading on 0.65.
@hookimpl
def render_cell(row, value, column, table, database, datasette):
    return views.render_cell(datasette, database, table, column, row, value)


@hookimpl
def table_actions(datasette, database, table):
    return views.table_actions(datasette, database, table)


# Datasette 1.0a only; on 0.65 the image cell on the row page links to the same page.
@hookimpl
def row_actions(datasette, database, table, row):
    return views.row_actions(datasette, database, table, row)


# Datasette 0.65 only: see views.check_form_csrf.
@hookimpl
def skip_csrf(datasette, scope):
    return views.skip_csrf(datasette, scope)
