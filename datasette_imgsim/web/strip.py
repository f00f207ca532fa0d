"""The similar strip under a row: its 8 nearest images, linking to the full similar page.

On 1.0a the top_row hook renders it (and a line of script moves it under the row's table);
on 0.65, which has no row-page slot, extra_body_script fetches GET /{db}/{table}/-/strip/{pk}
(this fragment) and inserts it there."""
from __future__ import annotations

from datasette import Response
from datasette.utils import tilde_decode

from ..api import ImageIndex
from ..errors import ImgsimError
from .captions import labels_for
from .links import Urls
from .permissions import can_view_table, visible_table
from .render import cache_headers, config
from .results import Cards, result_item, scored_cards
from .rows import fetch_rows

STRIP_SIZE = 8


async def strip_html(datasette, request, database: str, table: str, pk) -> str:
    """The strip's HTML, or "" when the row is not indexed or cannot be searched."""
    db = datasette.get_database(database)

    def work(conn):
        images = ImageIndex.over(conn)
        spec = images.index(table)
        found = images.store.item(spec, pk)
        if found is None:
            return None
        matches = [m.to_dict() for m in images.similar_to_row(table, pk, STRIP_SIZE, spec.method)]
        keys = [found[1]] + [m["pk"] for m in matches]
        return spec, found[1], matches, fetch_rows(conn, spec, keys), labels_for(images, table, keys)

    try:
        done = await db.execute_fn(work)
    except ImgsimError:
        return ""
    if done is None:
        return ""
    spec, stored_pk, matches, rows, labels = done
    urls = Urls(datasette, database, table)
    cards = Cards(urls, spec, config(datasette, database, table), labels)
    query = cards.card(result_item(urls, spec, rows, stored_pk))
    context = {"spec": spec, "query": query, "table": table,
               "results": scored_cards(cards, [result_item(urls, spec, rows, m) for m in matches]),
               "similar_url": urls.similar(stored_pk), "gallery_url": urls.gallery()}
    return await datasette.render_template("_imgsim_strip.html", context, request=request)


async def strip_view(datasette, request):
    db, table, private = await visible_table(datasette, request)
    html = await strip_html(datasette, request, db.name, table, tilde_decode(request.url_vars["pk"]))
    return Response.html(html, headers=cache_headers(private))


async def top_row(datasette, request, database: str, table: str, row) -> str:
    from .decorations import indexed_tables

    found = (await indexed_tables(datasette, database)).get(table)
    if not found:
        return ""
    visible, _ = await can_view_table(datasette, request.actor if request else None, database, table)
    try:
        pk = row[found["pk"]]
    except (IndexError, KeyError):
        return ""
    return await strip_html(datasette, request, database, table, pk) if visible else ""
