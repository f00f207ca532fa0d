"""The one permission check of the plugin's pages, and the one test of Datasette's line."""
from __future__ import annotations

from typing import Any

from datasette.utils import tilde_decode
from datasette.utils.asgi import Forbidden, NotFound

from ..store import Store


def is_datasette_1(datasette) -> bool:
    """Datasette 1.0a (resource-based permissions, its own CSRF checks) rather than 0.65."""
    return hasattr(datasette, "allowed")


async def can_view_table(datasette, actor, database: str, table: str) -> tuple[bool, bool]:
    """(visible, private) of a table for an actor, on either Datasette line."""
    if is_datasette_1(datasette):
        from datasette.resources import TableResource

        return await datasette.check_visibility(
            actor, action="view-table", resource=TableResource(database=database, table=table))
    return await datasette.check_visibility(
        actor, permissions=[("view-table", (database, table)), ("view-database", database),
                            "view-instance"])


async def visible_table(datasette, request) -> tuple[Any, str, bool]:
    """The (database, table, private) a request names, if the actor may view that table.

    403 when the actor may not view it, checked first so that a denied actor learns
    nothing, not even which tables exist; then 404 for an unknown table. Both before
    any pk, distance or pixel is read.
    """
    route = tilde_decode(request.url_vars["database"])
    table = tilde_decode(request.url_vars["table"])
    try:
        db = datasette.get_database(route=route)
    except KeyError:
        raise NotFound(f"database not found: {route}")
    visible, private = await can_view_table(datasette, request.actor, db.name, table)
    if not visible:
        raise Forbidden("You do not have permission to view this table")
    if not (await db.table_exists(table) or table in await db.view_names()
            or await db.execute_fn(lambda conn: bool(Store(conn).indexes(table)))):
        raise NotFound(f"table not found: {table}")
    return db, table, private
