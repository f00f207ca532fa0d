"""Entry points on Datasette's own pages: thumbnail cells, table actions, row actions."""
from __future__ import annotations

import time

from datasette.utils import tilde_encode
from markupsafe import Markup

from ..store import Store

CELL_SIZE = 96
INDEX_CACHE_SECONDS = 5.0
# Columns an app's image table names its files by (digiKam Images.name, ...).
NAME_COLUMNS = ("name", "filename", "file_name", "title", "baseName", "originalFilename")

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


def cell_column(found: dict, row) -> str:
    """Which column of Datasette's table page gets the thumbnail: the image column, or for
    an index over a query (an app preset, whose path may be computed) the first of the image
    column, the caption column and the key that the table has."""
    if not found["query"]:
        return found["column"]
    try:
        columns = list(row.keys())
    except AttributeError:
        columns = []
    for name in (found["column"], found["caption"], *NAME_COLUMNS):
        if name in columns:
            return name
    # Datasette shows the key as the row's link, which no plugin renders: the next column.
    return next((c for c in columns if c != found["pk"]), found["pk"])


def cell_alt(datasette, database, table, found: dict, row, pk) -> str:
    """A thumbnail's alt text: the row's caption, as the plugin's pages caption it."""
    from types import SimpleNamespace

    from .captions import Describer
    from .render import config

    spec = SimpleNamespace(table=table, column=found["column"], pk=found["pk"],
                           source={"caption_column": found["caption"]})
    try:
        values = dict(zip(row.keys(), tuple(row)))
    except (AttributeError, TypeError):
        values = {}
    return Describer(spec, config(datasette, database, table)).caption(values, pk) or f"image {pk}"


def render_cell(datasette, database, table, column, row, value):
    if not table or not database:
        return None

    async def inner():
        found = (await indexed_tables(datasette, database)).get(table)
        if not found or column != cell_column(found, row) or value is None:
            return None
        try:
            pk = row[found["pk"]]
        except (IndexError, KeyError):
            return None
        base = datasette.urls.table(database, table)
        encoded = tilde_encode(str(pk))
        text = value if isinstance(value, (str, int, float)) else None
        # The thumbnail goes beside the value, not instead of it: the file name stays readable.
        return Markup(
            '<a class="imgsim-cell" href="{similar}" title="Find similar images">'
            '<img src="{thumb}" alt="{alt}" loading="lazy" '
            'style="max-width:{size}px;max-height:{size}px;display:block">'
            '<span style="font-size:0.8em">similar images</span></a>{text}'
        ).format(similar=f"{base}/-/similar/{encoded}",
                 thumb=f"{base}/-/thumbnail/{encoded}?size={CELL_SIZE}",
                 alt=cell_alt(datasette, database, table, found, row, pk),
                 size=CELL_SIZE,
                 text=Markup('<br><span class="imgsim-cell-text">{}</span>').format(text)
                 if text is not None else "")

    return inner


def table_actions(datasette, database, table):
    async def inner():
        if table and table in await indexed_tables(datasette, database):
            base = datasette.urls.table(database, table)
            return [{"href": f"{base}/-/gallery", "label": "View as gallery",
                     "description": "These photos as a grid of thumbnails, with a large view"},
                    {"href": f"{base}/-/similar", "label": "Search by image",
                     "description": "Upload an image and find the most similar ones here"}]
        return []

    return inner


def row_actions(datasette, database, table, row):
    async def inner():
        found = (await indexed_tables(datasette, database)).get(table)
        if not found:
            return []
        try:
            pk = row[found["pk"]]
        except (IndexError, KeyError):
            return []
        return [{"href": f"{datasette.urls.table(database, table)}/-/similar/{tilde_encode(str(pk))}",
                 "label": "Find similar images",
                 "description": "The images in this table that look most like this row's"}]

    return inner
