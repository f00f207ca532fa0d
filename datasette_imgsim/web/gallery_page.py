"""GET /{db}/{table}/-/gallery: a table's photos as a grid, narrowed exactly as the table
page is: its query string (filters, sort, facets, `_next`) goes to Datasette's own table
JSON, as the same actor, so Datasette decides which rows and in what order. `_imgsim_label`
narrows to the rows the index labelled so. An index over a query whose name is not a table
(an app preset's) is paged in index order instead."""
from __future__ import annotations

import json
from urllib.parse import parse_qsl, urlencode

from datasette import Response
from datasette.views.base import DatasetteError

from ..api import ImageIndex
from .captions import labels_for
from .links import Urls
from .permissions import is_datasette_1, visible_table
from .render import cache_headers, config, database_color, in_db
from .results import Cards, result_item
from .rows import fetch_rows, lookup

PER_PAGE = 60
MAX_LABEL_KEYS = 5000
OWN_ARGS = ("_imgsim_label", "method")
DROPPED = ("_shape", "_size", "_json", "_extra", "_labels")


async def table_json(datasette, request, path: str) -> dict:
    """Datasette's own JSON for path, fetched as the requesting actor."""
    if is_datasette_1(datasette):
        kwargs = {"actor": request.actor} if request.actor else {}
    else:
        headers = {name: request.headers[name] for name in ("cookie", "authorization")
                   if request.headers.get(name)}
        kwargs = {"headers": headers}
    response = await datasette.client.get(path, **kwargs)
    try:
        data = response.json()
    except ValueError:
        data = {}
    if response.status_code != 200:
        message = data.get("error") if isinstance(data, dict) else None
        raise DatasetteError(message or f"the table query failed ({response.status_code})",
                             status=response.status_code)
    return data


def label_keys(conn, table: str, label: str) -> list:
    return [r[0] for r in conn.execute(
        "select distinct pk from _imgsim_labels where table_name = ? and label = ? limit ?",
        (table, label, MAX_LABEL_KEYS))]


def index_page(conn, spec, offset: int, label):
    """(keys, next offset) of an index that is not a table, in index order."""
    sql = "select i.pk from _imgsim_items i where i.index_id = ? and i.error is null"
    params: list = [spec.id]
    if label:
        sql += (" and exists (select 1 from _imgsim_labels l where l.item_id = i.item_id "
                "and l.label = ?)")
        params.append(label)
    keys = [r[0] for r in conn.execute(sql + " order by i.item_id limit ? offset ?",
                                       params + [PER_PAGE + 1, offset])]
    return keys[:PER_PAGE], (str(offset + PER_PAGE) if len(keys) > PER_PAGE else None)


def facets(data: dict, urls: Urls) -> list[dict]:
    """Datasette's facet results (0.65 and 1.0a shapes) with links that stay in the gallery."""
    found = data.get("facet_results") or {}
    found = found.get("results", found) if isinstance(found, dict) else {}
    shown = []
    for name, facet in found.items():
        if not isinstance(facet, dict):
            continue
        values = []
        for value in facet.get("results") or []:
            query = (value.get("toggle_url") or "").partition("?")[2]
            values.append({"label": value.get("label"), "count": value.get("count"),
                           "selected": value.get("selected"),
                           "url": urls.gallery(_strip(query))})
        shown.append({"name": facet.get("name", name), "values": values})
    return shown


def _strip(query: str) -> str:
    return urlencode([(k, v) for k, v in parse_qsl(query, keep_blank_values=True)
                      if k not in DROPPED])


async def gallery_view(datasette, request):
    db, table, private = await visible_table(datasette, request)
    label = request.args.get("_imgsim_label") or None
    method = request.args.get("method") or None
    pairs = [(k, v) for k, v in parse_qsl(request.query_string, keep_blank_values=True)
             if k not in OWN_ARGS and k not in DROPPED]
    urls = Urls(datasette, db.name, table)
    spec = await in_db(db, lambda conn: ImageIndex.over(conn).index(table, method))
    is_table = await db.table_exists(table) or table in await db.view_names()
    data, keys, next_token = {}, [], None
    if is_table:
        args = list(pairs)
        if label:
            found = await db.execute_fn(lambda conn: label_keys(conn, table, label))
            args.append((f"{spec.pk}__in", json.dumps(found)))
        if not label or found:
            args += [("_shape", "objects"), ("_size", str(PER_PAGE))]
            if is_datasette_1(datasette) and any(k == "_facet" for k, _ in pairs):
                args.append(("_extra", "facet_results"))
            data = await table_json(datasette, request,
                                    datasette.urls.table(db.name, table, format="json")
                                    + "?" + urlencode(args))
        keys = [row[spec.pk] for row in data.get("rows") or [] if spec.pk in row]
        next_token = data.get("next")
    else:
        offset = int(request.args.get("_next") or 0) if (request.args.get("_next") or "0").isdigit() else 0
        keys, next_token = await db.execute_fn(lambda conn: index_page(conn, spec, offset, label))

    def work(conn):
        images = ImageIndex.over(conn)
        return fetch_rows(conn, spec, keys), labels_for(images, table, keys)

    rows, labels = await in_db(db, work)
    cards = Cards(urls, spec, config(datasette, db.name, table), labels)
    # A row the index's query leaves out (an app's hidden or trashed photo), or one without
    # an image, has nothing to show.
    items = [result_item(urls, spec, rows, pk) for pk in keys if lookup(rows, pk)[1]]
    items = [i for i in items if i["row"].get(spec.column, True) is not None]
    kept = [(k, v) for k, v in pairs if k != "_next"]
    own = [(k, v) for k, v in (("_imgsim_label", label), ("method", method)) if v]
    next_url = (urls.gallery(urlencode(own + kept + [("_next", next_token)]))
                if next_token else None)
    filters = [(k, v) for k, v in kept if not k.startswith("_")]
    context = {
        "database": db.name, "color": database_color(db), "table": table, "spec": spec,
        "private": private, "cards": cards.cards(items), "label": label, "filters": filters,
        "facets": facets(data, urls), "faceted": any(k == "_facet" for k, _ in pairs),
        "next_url": next_url,
        "first_url": urls.gallery(urlencode(own + kept)) if request.args.get("_next") else None,
        "table_url": urls.base + (f"?{urlencode(kept)}" if kept else ""),
        "clear_label_url": urls.gallery(urlencode(kept)) if label else None,
        "clear_url": urls.gallery() if (filters or label) else None,
        "upload_url": urls.upload(), "duplicates_url": urls.duplicates(),
    }
    html = await datasette.render_template("imgsim_gallery.html", context, request=request)
    return Response.html(html, headers=cache_headers(private))
