"""Datasette hook implementations: each a few lines over the modules that do the work."""
from datasette import hookimpl

# Modules are imported inside the hooks that use them: importing this package is
# then cheap, which indexing worker processes (they import it before the modules
# they need) pay on every run.


@hookimpl
def prepare_connection(conn, database, datasette):
    from . import sql
    from .sidecar import attach_served
    from .store import ExtensionUnavailable, load_sqlite_vec, map_indexes

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
    from . import duplicates_view, views

    return views.routes() + [duplicates_view.route()]


# Only arguments both Datasette 0.65 and 1.0a pass: a 1.0a-only one (request)
# would stop the plugin loading on 0.65.
@hookimpl
def render_cell(row, value, column, table, database, datasette):
    from . import views

    return views.render_cell(datasette, database, table, column, row, value)


@hookimpl
def table_actions(datasette, database, table):
    from . import views

    return views.table_actions(datasette, database, table)


# Datasette 1.0a only; on 0.65 the image cell on the row page links to the same page.
@hookimpl
def row_actions(datasette, database, table, row):
    from . import views

    return views.row_actions(datasette, database, table, row)


# Datasette 0.65 only: see views.check_form_csrf.
@hookimpl
def skip_csrf(datasette, scope):
    from . import views

    return views.skip_csrf(datasette, scope)
