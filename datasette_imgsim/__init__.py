"""Datasette hook implementations: each a few lines over the modules that do the work."""
from datasette import hookimpl

from . import sql
from .cli import register as register_cli
from .sidecar import attach_served
from .store import ExtensionUnavailable, load_sqlite_vec


@hookimpl
def prepare_connection(conn, database, datasette):
    try:
        load_sqlite_vec(conn)
    except ExtensionUnavailable:
        # startup() reports it once; the SQL functions still register and explain.
        pass
    attach_served(conn, datasette, database)
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
