"""Search results as JSON items and as what the templates show."""
from __future__ import annotations

from typing import Optional

from .links import Urls
from .rows import caption, json_value, lookup

GRID_SIZE = 256
LARGE_SIZE = 768


def result_item(urls: Urls, spec, found: dict, result) -> dict:
    """A search result ({"pk", "distance"[, "inliers"]}, or a bare pk for the query row)
    with its thumbnail, row link and row."""
    result = result if isinstance(result, dict) else {"pk": result}
    pk = result["pk"]
    row_path, row = lookup(found, pk)
    return {
        **result,
        "thumbnail_url": urls.thumbnail(pk, GRID_SIZE, spec.method),
        "row_url": urls.row(row_path, spec.pk, pk),
        "row": {name: json_value(value) for name, value in row.items()},
    }


def page_item(urls: Urls, spec, item: dict, method_arg: Optional[str], k_arg) -> dict:
    """What a template shows for a result: the JSON item plus links and a caption."""
    return dict(item, similar_url=urls.similar(item["pk"], method=method_arg, k=k_arg),
                caption=caption(item["row"], spec) or str(item["pk"]))


def payload(database: str, spec, query: dict, results: list) -> dict:
    return {"database": database, "table": spec.table, "method": spec.method,
            "metric": spec.metric, "query": query, "results": results}


def method_links(urls_for, specs, current: str) -> list[dict]:
    return [{"method": s.method, "metric": s.metric, "url": urls_for(s.method),
             "current": s.method == current} for s in specs]
