"""GET /{database}/{table}/-/duplicates[.json]: near-duplicate groups, paged, with the
threshold adjustable. Thin over ImageIndex.duplicates; thumbnails through the thumbnail route."""
from __future__ import annotations

from datasette import Response

from ..api import ImageIndex
from ..duplicates import copy_threshold, default_threshold
from .links import Urls
from .permissions import visible_table
from .render import cache_headers, config, database_color, in_db
from .results import GRID_SIZE
from .captions import labels_for
from .results import Cards, result_item
from .rows import fetch_rows, lookup

PER_PAGE = 20


def _page(value) -> int:
    try:
        return max(1, int(value or 1))
    except ValueError:
        return 1


async def duplicates_view(datasette, request):
    db, table, private = await visible_table(datasette, request)
    method = request.args.get("method") or None
    threshold = request.args.get("threshold") or None
    page = _page(request.args.get("page"))
    as_json = request.url_vars.get("format") == ".json"

    def work(conn):
        images = ImageIndex.over(conn)
        spec = images.index(table, method)
        found = images.duplicates(table, spec.method, threshold)
        shown = found.groups[(page - 1) * PER_PAGE: page * PER_PAGE]
        keys = [m.pk for g in shown for m in g.members]
        rows = fetch_rows(conn, spec, keys)
        labels = {} if as_json else labels_for(images, table, keys)
        return spec, images.store.indexes(table), found, shown, rows, labels

    spec, specs, found, shown, rows, labels = await in_db(db, work)
    urls = Urls(datasette, db.name, table)
    cards = Cards(urls, spec, config(datasette, db.name, table), labels)

    def link(suffix="", **changes):
        args = {"method": method, "threshold": threshold, "page": page if page > 1 else None}
        args.update(changes)
        return urls.duplicates(suffix, **args)

    pages = max(1, -(-len(found.groups) // PER_PAGE))
    data = found.to_dict()
    data.update(database=db.name, table=table, page=page, pages=pages, per_page=PER_PAGE,
                groups=[g.to_dict() for g in shown], total_groups=len(found.groups),
                copy_threshold=copy_threshold(spec.method))
    for group in data["groups"]:
        for member in group["members"]:
            row_path, _ = lookup(rows, member["pk"])
            member["thumbnail_url"] = urls.thumbnail(member["pk"], GRID_SIZE, spec.method)
            member["row_url"] = urls.row(row_path, spec.pk, member["pk"])
            if not as_json:
                card = cards.card(result_item(urls, spec, rows, member["pk"]))
                member.update(caption=card["caption"], lightbox=card["lightbox"],
                              labels=card["labels"], similar_url=card["similar_url"],
                              date=card["date"])
    if as_json:
        return Response.json(data, headers=cache_headers(private))
    context = {
        "database": db.name, "color": database_color(db), "table": table, "spec": spec,
        "data": data, "private": private, "threshold": found.threshold,
        "default_threshold": default_threshold(spec.method),
        "form_url": urls.duplicates(), "json_url": link(".json"), "table_url": urls.base,
        "methods": [{"method": s.method, "url": link(method=s.method, threshold=None, page=None),
                     "current": s.method == spec.method} for s in specs],
        "previous_url": link(page=page - 1) if page > 1 else None,
        "next_url": link(page=page + 1) if page < pages else None,
    }
    html = await datasette.render_template("imgsim_duplicates.html", context, request=request)
    return Response.html(html, headers=cache_headers(private))
