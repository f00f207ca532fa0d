"""Search results as JSON items, and photos as every page shows them (cards)."""
from __future__ import annotations

import json
from typing import Optional

from ..store import key_candidates
from .captions import Describer
from .links import Urls
from .rows import json_value, lookup
from .similarity import annotate

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
        "image_url": urls.image(pk),
        "row_url": urls.row(row_path, spec.pk, pk),
        "row": {name: json_value(value) for name, value in row.items()},
    }


class Cards:
    """Photos as the templates show them: caption, date, label chips, links, lightbox data."""

    def __init__(self, urls: Urls, spec, settings: Optional[dict] = None,
                 labels: Optional[dict] = None, method_arg: Optional[str] = None, k_arg=None):
        self.urls, self.spec = urls, spec
        self.describer = Describer(spec, settings)
        self.labels = labels or {}
        self.method_arg, self.k_arg = method_arg, k_arg

    def label_chips(self, pk) -> list[dict]:
        labels = next((self.labels[c] for c in key_candidates(pk) if c in self.labels), [])
        return [{"label": label, "url": self.urls.gallery(_imgsim_label=label)}
                for label in (labels or [])]

    def card(self, item: dict) -> dict:
        """item: a result_item (or any dict with "pk", "row", "row_url")."""
        pk, row = item["pk"], item.get("row") or {}
        caption = self.describer.caption(row, pk)
        chips = self.label_chips(pk)
        similar_url = self.urls.similar(pk, method=self.method_arg, k=self.k_arg)
        card = dict(item, caption=caption, date=self.describer.date(row), labels=chips,
                    similar_url=similar_url,
                    thumbnail_url=item.get("thumbnail_url")
                    or self.urls.thumbnail(pk, GRID_SIZE, self.spec.method),
                    image_url=item.get("image_url") or self.urls.image(pk))
        card["lightbox"] = json.dumps({
            "caption": caption, "date": card["date"], "labels": chips,
            "row": card.get("row_url"), "similar": similar_url, "image": card["image_url"],
            "similarity": item.get("similarity")})
        return card

    def cards(self, items: list[dict]) -> list[dict]:
        return [self.card(item) for item in items]


def scored_cards(cards: Cards, items: list[dict]) -> list[dict]:
    """Search results as cards with their similarity band and the unrelated divider."""
    return cards.cards(annotate(cards.spec.method, [dict(i) for i in items]))


def payload(database: str, spec, query: dict, results: list) -> dict:
    return {"database": database, "table": spec.table, "method": spec.method,
            "metric": spec.metric, "query": query, "results": results}


def method_links(urls_for, specs, current: str) -> list[dict]:
    return [{"method": s.method, "metric": s.metric, "url": urls_for(s.method),
             "current": s.method == current} for s in specs]
