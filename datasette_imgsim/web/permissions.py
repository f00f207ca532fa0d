"""The one permission check of the plugin's pages, and the one test of Datasette's line."""
from __future__ import annotations

from typing import Any, Optional

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


# --- The plugin's own tables follow their source tables' permissions --------------------
#
# The _imgsim_ tables hold keys, labels, fingerprints and vectors of the tables they
# index. A per-index vector table (_imgsim_<table>_<method>, and the shadow tables
# sqlite-vec makes for it) may be viewed only by an actor who may view its source table;
# a shared table (items, labels, indexes, roots, errors...) only by an actor who may view
# every table it describes. A source that is not a table of the same database (an index
# over a query, or a sidecar served as a database of its own) counts as every table of
# every database. Both lines: permission_allowed on 0.65, permission_resources_sql on
# 1.0a (a child-level deny, which beats any allow).

import contextvars
import re
import json
import time

from ..store import is_internal

PREFIX = "_imgsim_"
_checking = contextvars.ContextVar("imgsim_checking_sources", default=False)
_layouts: dict = {}  # database name -> (time, layout)
LAYOUT_SECONDS = 2.0


def _layout_of(conn) -> Optional[dict]:
    """{"tables": user tables and views, "imgsim": _imgsim_ tables, "indexes": [(source,
    vec_table)]} of a database, or None when it holds no index."""
    names = [r[0] for r in conn.execute(
        "select name from main.sqlite_master where type in ('table', 'view')")]
    imgsim = [n for n in names if n.lower().startswith(PREFIX)]
    if not imgsim or "_imgsim_indexes" not in names:
        return None
    indexes = [(r[0], r[1]) for r in conn.execute(
        'select table_name, vec_table from main._imgsim_indexes')]
    return {"tables": [n for n in names if not is_internal(n)], "imgsim": imgsim,
            "indexes": indexes}


async def _layout(datasette, name: str) -> Optional[dict]:
    cached = _layouts.get(name)
    if cached and time.monotonic() - cached[0] < LAYOUT_SECONDS:
        return cached[1]
    db = datasette.databases.get(name)
    if db is None or name == "_internal":
        return None
    try:
        layout = await db.execute_fn(_layout_of)
    except Exception:
        layout = None
    _layouts[name] = (time.monotonic(), layout)
    return layout


def _sources(layout: dict, table: str) -> Optional[list]:
    """The source tables an _imgsim_ table describes: its index's table for a vector
    table (longest vec_table prefix), all of them for a shared table; None: every table
    of every database."""
    lowered = table.lower()
    owners = [(vec, source) for source, vec in layout["indexes"]
              if vec and (lowered == vec.lower() or lowered.startswith(vec.lower() + "_"))]
    sources = ([max(owners, key=lambda o: len(o[0]))[1]] if owners
               else sorted({source for source, _ in layout["indexes"]}))
    if any(source not in layout["tables"] for source in sources):
        return None
    return sources


async def _all_tables(datasette) -> list:
    found = []
    for name, db in list(datasette.databases.items()):
        if name == "_internal":
            continue
        try:
            tables = await db.table_names() + await db.view_names()
        except Exception:
            continue
        found += [(name, t) for t in tables if not is_internal(t)]
    return found


async def _may_view_sources(datasette, actor, database: str, layout: dict, table: str,
                            memo: dict) -> bool:
    sources = _sources(layout, table)
    pairs = ([(database, s) for s in sources] if sources is not None
             else await _all_tables(datasette))
    for pair in pairs:
        if pair not in memo:
            memo[pair] = (await can_view_table(datasette, actor, *pair))[0]
        if not memo[pair]:
            return False
    return True


async def index_table_allowed(datasette, actor, action, resource) -> Optional[bool]:
    """Datasette 0.65's permission_allowed: False for an _imgsim_ table whose sources the
    actor may not view; None (no opinion) for everything else."""
    if action != "view-table" or not resource or _checking.get():
        return None
    try:
        database, table = resource
    except (TypeError, ValueError):
        return None
    if not isinstance(table, str) or not table.lower().startswith(PREFIX):
        return None
    token = _checking.set(True)
    try:
        layout = await _layout(datasette, database)
        if layout is None:
            return None
        return None if await _may_view_sources(datasette, actor, database, layout, table, {}) \
            else False
    finally:
        _checking.reset(token)


async def index_table_rules(datasette, actor, action):
    """Datasette 1.0a's permission_resources_sql: a deny for each _imgsim_ table whose
    sources the actor may not view."""
    if action != "view-table" or _checking.get():
        return None
    from datasette.permissions import PermissionSQL

    token = _checking.set(True)
    denied, memo = [], {}
    try:
        for name in list(datasette.databases):
            layout = await _layout(datasette, name)
            if layout is None:
                continue
            for table in layout["imgsim"]:
                if not await _may_view_sources(datasette, actor, name, layout, table, memo):
                    denied.append([name, table, "datasette-imgsim: describes a table you "
                                                "may not view"])
    finally:
        _checking.reset(token)
    if not denied:
        return None
    return PermissionSQL(
        sql="SELECT json_extract(value, '$[0]') AS parent, json_extract(value, '$[1]') AS child, "
            "0 AS allow, json_extract(value, '$[2]') AS reason FROM json_each(:imgsim_denied)",
        params={"imgsim_denied": json.dumps(denied)})


# --- JSON errors for .json routes -------------------------------------------------------

def json_error(message: str, status: int):
    """The error response of a plugin route asked for .json: JSON on both lines (0.65
    answers a Forbidden with an HTML page). Use: `return json_error(str(e), 403)`."""
    from datasette import Response

    return Response.json({"ok": False, "error": message, "status": status}, status=status)


async def visible_table_or_error(datasette, request):
    """visible_table for a page that may be asked for .json: (db, table, private, None),
    or (None, None, None, response) with the 403/404 as JSON when the route is .json."""
    try:
        db, table, private = await visible_table(datasette, request)
    except (Forbidden, NotFound) as e:
        if request.url_vars.get("format") == ".json" or request.path.endswith(".json"):
            return None, None, None, json_error(str(e.args[0] if e.args else e),
                                                403 if isinstance(e, Forbidden) else 404)
        raise
    return db, table, private, None


PLUGIN_ROUTE = re.compile(r"^/[^/]+/[^/]+/-/[^?]*\.json$")


def forbidden_response(request, message: str):
    """The forbidden() hook: a plugin route asked for .json answers its 403 as JSON on
    both lines (0.65 renders Datasette's HTML error page); None for anything else."""
    if request is None or not PLUGIN_ROUTE.match(request.path or ""):
        return None
    return json_error(message or "Forbidden", 403)
