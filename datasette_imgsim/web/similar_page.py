"""GET /{db}/{table}/-/similar/{pk}[.json]: the images nearest to a row's."""
from __future__ import annotations

from datasette import Response
from datasette.utils import tilde_decode

from ..api import ImageIndex
from ..errors import NotFound
from .links import Urls
from .permissions import visible_table
from .render import cache_headers, database_color, in_db
from .results import LARGE_SIZE, method_links, page_item, payload, result_item
from .rows import fetch_rows


async def similar_row_view(datasette, request):
    db, table, private = await visible_table(datasette, request)
    pk = tilde_decode(request.url_vars["pk"])
    method = request.args.get("method") or None
    k = request.args.get("k") or None
    rerank = request.args.get("rerank") or None

    def work(conn):
        images = ImageIndex.over(conn)
        spec = images.index(table, method)
        matches = images.similar_to_row(table, pk, k, spec.method, rerank)
        found = images.store.item(spec, pk)
        if found is None:
            raise NotFound(f"row {pk!r} of {table!r} is not in the {spec.method!r} index")
        stored_pk = found[1]
        results = [m.to_dict() for m in matches]
        rows = fetch_rows(conn, spec, [stored_pk] + [r["pk"] for r in results])
        return spec, images.store.indexes(table), stored_pk, results, rows

    spec, specs, stored_pk, results, found = await in_db(db, work)
    urls = Urls(datasette, db.name, table)
    items = [result_item(urls, spec, found, r) for r in results]
    if request.url_vars.get("format") == ".json":
        return Response.json(payload(db.name, spec, {"pk": stored_pk}, items),
                             headers=cache_headers(private))
    query = page_item(urls, spec, result_item(urls, spec, found, stored_pk), method, k)
    query["large_url"] = urls.thumbnail(stored_pk, LARGE_SIZE, spec.method)
    context = {
        "database": db.name, "color": database_color(db), "table": table, "spec": spec,
        "k": len(items) if k is None else k,
        "query": query, "upload": None, "rerank": rerank,
        "results": [page_item(urls, spec, item, method, k) for item in items],
        "methods": method_links(lambda m: urls.similar(stored_pk, method=m, k=k), specs, spec.method),
        "upload_url": urls.upload(method=method), "table_url": urls.base,
        "json_url": urls.similar(stored_pk, ".json", method=method, k=k),
        "private": private,
    }
    html = await datasette.render_template("imgsim_similar.html", context, request=request)
    return Response.html(html, headers=cache_headers(private))
