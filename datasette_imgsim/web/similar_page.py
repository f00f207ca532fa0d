"""GET /{db}/{table}/-/similar/{pk}[.json]: the images nearest to a row's, results first."""
from __future__ import annotations

from datasette import Response
from datasette.utils import tilde_decode

from ..api import ImageIndex
from ..errors import NotFound
from .captions import labels_for
from .links import Urls
from .permissions import visible_table
from .render import cache_headers, config, database_color, in_db
from .results import LARGE_SIZE, Cards, method_links, payload, result_item, scored_cards
from .rows import fetch_rows
from .similarity import thresholds


async def similar_row_view(datasette, request):
    db, table, private = await visible_table(datasette, request)
    pk = tilde_decode(request.url_vars["pk"])
    method = request.args.get("method") or None
    k = request.args.get("k") or None
    rerank = request.args.get("rerank") or None
    as_json = request.url_vars.get("format") == ".json"

    def work(conn):
        images = ImageIndex.over(conn)
        spec = images.index(table, method)
        matches = images.similar_to_row(table, pk, k, spec.method, rerank)
        found = images.store.item(spec, pk)
        if found is None:
            raise NotFound(f"row {pk!r} of {table!r} is not in the {spec.method!r} index")
        stored_pk = found[1]
        results = [m.to_dict() for m in matches]
        keys = [stored_pk] + [r["pk"] for r in results]
        rows = fetch_rows(conn, spec, keys)
        labels = {} if as_json else labels_for(images, table, keys)
        return spec, images.store.indexes(table), stored_pk, results, rows, labels

    spec, specs, stored_pk, results, found, labels = await in_db(db, work)
    urls = Urls(datasette, db.name, table)
    items = [result_item(urls, spec, found, r) for r in results]
    if as_json:
        return Response.json(payload(db.name, spec, {"pk": stored_pk}, items),
                             headers=cache_headers(private))
    cards = Cards(urls, spec, config(datasette, db.name, table), labels, method, k)
    query = cards.card(result_item(urls, spec, found, stored_pk))
    query["large_url"] = urls.thumbnail(stored_pk, LARGE_SIZE, spec.method)
    context = {
        "database": db.name, "color": database_color(db), "table": table, "spec": spec,
        "k": len(items) if k is None else k,
        "query": query, "upload": None, "rerank": rerank,
        "results": scored_cards(cards, items),
        "bands": thresholds(spec.method),
        "methods": method_links(lambda m: urls.similar(stored_pk, method=m, k=k, rerank=rerank),
                                specs, spec.method),
        "upload_url": urls.upload(method=method), "table_url": urls.base,
        "gallery_url": urls.gallery(),
        "json_url": urls.similar(stored_pk, ".json", method=method, k=k, rerank=rerank),
        "private": private,
    }
    html = await datasette.render_template("imgsim_similar.html", context, request=request)
    return Response.html(html, headers=cache_headers(private))
