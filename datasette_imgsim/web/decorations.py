"""Entry points on Datasette's own pages: thumbnail cells, table actions, row actions."""
from __future__ import annotations

import time

from datasette.utils import tilde_encode
from markupsafe import Markup, escape

from ..store import Store

CELL_SIZE = 96
INDEX_CACHE_SECONDS = 5.0

_index_cache: dict = {}


async def indexed_tables(datasette, database: str) -> dict:
    """{table: (image column, pk column)} of a database's indexes, in it or its sidecar;
    cached for a few seconds because render_cell asks for every cell."""
    now = time.monotonic()
    key = (id(datasette), database)
    hit = _index_cache.get(key)
    if hit and now - hit[0] < INDEX_CACHE_SECONDS:
        return hit[1]
    try:
        db = datasette.get_database(database)
        tables = await db.execute_fn(lambda conn: Store(conn).indexed_tables())
    except Exception:
        # Entry points are decoration: a database that cannot be asked gets none.
        tables = {}
    _index_cache[key] = (now, tables)
    return tables


def render_cell(datasette, database, table, column, row, value):
    if not table or not database:
        return None

    async def inner():
        found = (await indexed_tables(datasette, database)).get(table)
        if not found or found[0] != column or value is None:
            return None
        pk_column = found[1]
        try:
            pk = row[pk_column]
        except (IndexError, KeyError):
            return None
        base = datasette.urls.table(database, table)
        encoded = tilde_encode(str(pk))
        return Markup(
            '<a class="imgsim-cell" href="{similar}" title="Find similar images">'
            '<img src="{thumb}" alt="{alt}" loading="lazy" '
            'style="max-width:{size}px;max-height:{size}px;display:block">'
            '<span>similar images</span></a>'
        ).format(similar=f"{base}/-/similar/{encoded}",
                 thumb=f"{base}/-/thumbnail/{encoded}?size={CELL_SIZE}",
                 alt=escape(str(value) if isinstance(value, str) else f"image {pk}"),
                 size=CELL_SIZE)

    return inner


def table_actions(datasette, database, table):
    async def inner():
        if table and table in await indexed_tables(datasette, database):
            return [{"href": f"{datasette.urls.table(database, table)}/-/similar",
                     "label": "Search by image",
                     "description": "Upload an image and find the most similar ones here"}]
        return []

    return inner


def row_actions(datasette, database, table, row):
    async def inner():
        found = (await indexed_tables(datasette, database)).get(table)
        if not found:
            return []
        try:
            pk = row[found[1]]
        except (IndexError, KeyError):
            return []
        return [{"href": f"{datasette.urls.table(database, table)}/-/similar/{tilde_encode(str(pk))}",
                 "label": "Find similar images",
                 "description": "The images in this table that look most like this row's"}]

    return inner
