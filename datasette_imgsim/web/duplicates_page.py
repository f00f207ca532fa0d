"""GET /{database}/{table}/-/duplicates[.json|.csv]: copy groups (verified), paged, with
their best copy, similar shots kept apart and versions listed apart; .csv is the review
list as a download. ?verify=0 groups by a bare threshold instead. Thin over
ImageIndex.duplicates; thumbnails through the thumbnail route."""
from __future__ import annotations

import collections
import threading

from datasette import Response

from .. import review
from ..api import ImageIndex
from ..duplicates import copy_threshold, default_threshold
from .captions import labels_for
from .links import Urls
from .permissions import visible_table
from .render import cache_headers, config, database_color, in_db
from .results import GRID_SIZE, Cards, result_item
from .rows import fetch_rows, lookup

PER_PAGE = 20
# A page request verifies for at most this long (plugin config duplicates_seconds);
# what is left is counted, and `datasette imgsim duplicates` verifies it all.
PAGE_SECONDS = 20.0
MEMO_SIZE = 200_000  # verdicts this server process keeps between requests


class _Memo(collections.OrderedDict):
    """Verdicts decided by this process's requests (the index database is read-only
    to pages), least recently added dropped first."""

    lock = threading.Lock()

    def __setitem__(self, key, value):
        with self.lock:
            super().__setitem__(key, value)
            while len(self) > MEMO_SIZE:
                self.popitem(last=False)


MEMO = _Memo()


def _page(value) -> int:
    try:
        return max(1, int(value or 1))
    except ValueError:
        return 1


async def duplicates_view(datasette, request):
    db, table, private = await visible_table(datasette, request)
    method = request.args.get("method") or None
    threshold = request.args.get("threshold") or None
    verify = request.args.get("verify") not in ("0", "false", "no")
    page = _page(request.args.get("page"))
    fmt = (request.url_vars.get("format") or "").lstrip(".")
    settings = config(datasette, db.name, table)
    seconds = float(settings.get("duplicates_seconds") or PAGE_SECONDS)

    def work(conn):
        images = ImageIndex.over(conn)
        spec = images.index(table, method)
        if verify:
            found = images.duplicates(table, method, threshold, seconds=seconds, memo=MEMO,
                                      save=False, extra_roots=settings.get("roots") or ())
        else:
            found = images.duplicates(table, spec.method, threshold, verify=False)
        everything = list(found.groups) + list(found.versions)
        shown = everything if fmt == "csv" else everything[(page - 1) * PER_PAGE: page * PER_PAGE]
        keys = [m.pk for g in shown for m in g.members]
        keys += [s["pk"] for g in shown for s in g.similar_shots]
        rows = fetch_rows(conn, spec, keys) if fmt != "csv" else {}
        labels = {} if fmt else labels_for(images, table, keys)
        return spec, images.store.indexes(table), found, shown, rows, labels

    spec, specs, found, shown, rows, labels = await in_db(db, work)
    if fmt == "csv":
        return Response(review.to_csv(found), content_type="text/csv; charset=utf-8", headers={
            **cache_headers(private),
            "content-disposition": f'attachment; filename="{table}-duplicates.csv"'})
    urls = Urls(datasette, db.name, table)
    cards = Cards(urls, spec, settings, labels)

    def link(suffix="", **changes):
        args = {"method": method, "threshold": threshold, "verify": None if verify else "0",
                "page": page if page > 1 else None}
        args.update(changes)
        return urls.duplicates(suffix, **args)

    total = len(found.groups) + len(found.versions)
    pages = max(1, -(-total // PER_PAGE))
    data = found.to_dict()
    data.pop("versions")
    data.update(database=db.name, table=table, page=page, pages=pages, per_page=PER_PAGE,
                groups=[g.to_dict() for g in shown], total_groups=len(found.groups),
                total_versions=len(found.versions), copy_threshold=copy_threshold(spec.method))
    for group in data["groups"]:
        best = group["members"][0]["pk"]
        for member in group["members"] + group.get("similar_shots", []):
            _decorate(member, urls, spec, rows, cards, None if fmt else best, method)
    if fmt == "json":
        return Response.json(data, headers=cache_headers(private))
    context = {
        "database": db.name, "color": database_color(db), "table": table, "spec": spec,
        "data": data, "private": private, "threshold": found.threshold, "verify": verify,
        "default_threshold": default_threshold(spec.method),
        "form_url": urls.duplicates(), "json_url": link(".json", page=None),
        "csv_url": link(".csv", page=None), "table_url": urls.base,
        "verify_url": link(verify="0" if verify else None, threshold=None, page=None),
        "methods": [{"method": s.method, "url": link(method=s.method, threshold=None, page=None),
                     "current": s.method == spec.method} for s in specs],
        "previous_url": link(page=page - 1) if page > 1 else None,
        "next_url": link(page=page + 1) if page < pages else None,
    }
    html = await datasette.render_template("imgsim_duplicates.html", context, request=request)
    return Response.html(html, headers=cache_headers(private))


def _decorate(member: dict, urls, spec, rows, cards, best, method) -> None:
    row_path, _ = lookup(rows, member["pk"])
    member["thumbnail_url"] = urls.thumbnail(member["pk"], GRID_SIZE, spec.method)
    member["row_url"] = urls.row(row_path, spec.pk, member["pk"])
    if best is None:
        return
    card = cards.card(result_item(urls, spec, rows, member["pk"]))
    member.update(caption=card["caption"], lightbox=card["lightbox"], labels=card["labels"],
                  similar_url=card["similar_url"], date=card["date"])
    if member["pk"] != best:
        member["compare_url"] = urls.compare(best, member["pk"], method=method)
