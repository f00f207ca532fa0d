"""GET /{db}/{table}/-/compare/{a}/{b}: two rows' images side by side, large, with the
verdict on the pair and their differences listed (from the duplicates page). The same
permission and root rules as the images themselves (row_image_source)."""
from __future__ import annotations

import asyncio

import numpy as np

from datasette import Response
from datasette.utils import tilde_decode
from datasette.views.base import DatasetteError

from .. import copies, decoding, verify
from ..errors import ImageError
from .links import Urls
from .permissions import visible_table
from .render import cache_headers, config, database_color, in_db
from .results import Cards, result_item
from .rows import fetch_rows
from .thumbnail_page import row_image_source


def differences(fa, fb, verdict) -> list[dict]:
    """The facts in which two images differ, as rows {"fact", "a", "b"}; the verdict first."""
    rows = [{"fact": "verdict", "a": verdict.reason if verdict else "could not be compared",
             "b": ""}]

    def add(name, a, b):
        if a != b:
            rows.append({"fact": name, "a": "—" if a in (None, "") else a,
                         "b": "—" if b in (None, "") else b})

    add("dimensions", f"{fa.width}×{fa.height}" if fa.width else None,
        f"{fb.width}×{fb.height}" if fb.width else None)
    add("file size", f"{fa.size:,} bytes" if fa.size is not None else None,
        f"{fb.size:,} bytes" if fb.size is not None else None)
    add("format", fa.format, fb.format)
    add("JPEG quality", fa.jpeg_quality, fb.jpeg_quality)
    add("camera RAW", "yes" if fa.is_raw else "no", "yes" if fb.is_raw else "no")
    add("taken", fa.taken_at, fb.taken_at)
    add("EXIF tags", fa.exif_count, fb.exif_count)
    if verdict is not None:
        add("greyscale", "yes" if verdict.grey == "a" else "no",
            "yes" if verdict.grey == "b" else "no")
        add("overlay or edit", "yes" if verdict.edited == "a" else "no",
            "yes" if verdict.edited == "b" else "no")
        add("the original", "yes" if verdict.which_is_source == "a" else "",
            "yes" if verdict.which_is_source == "b" else "")
        if verdict.mirrored:
            rows.append({"fact": "mirrored", "a": "one is the other's mirror image", "b": ""})
        if verdict.inliers:
            rows.append({"fact": "matched features", "a": verdict.inliers, "b": ""})
    add("file", fa.path, fb.path)
    return rows


async def compare_view(datasette, request):
    db, table, private = await visible_table(datasette, request)
    pks = [tilde_decode(request.url_vars[k]) for k in ("a", "b")]
    method = request.args.get("method") or None
    settings = config(datasette, db.name, table)
    sources = [await row_image_source(db, table, pk, method, settings) for pk in pks]
    loop = asyncio.get_running_loop()
    facts = [await loop.run_in_executor(None, copies.source_facts, s) for s in sources]
    try:
        pixels = [await decoding.decode(s.data if s.data is not None else s.path,
                                        copies.DECODE_SIZE, request) for s in sources]
    except ImageError as e:
        raise DatasetteError(f"cannot compare these images: {e}", status=422)

    def judge():
        a, b = (verify.prepare(np.asarray(p.convert("RGB"), np.uint8), features=False)
                for p in pixels)
        return verify.settle(a, b) or verify.verify_pair(a, b, facts[0], facts[1])

    verdict = await loop.run_in_executor(None, judge)

    def work(conn):
        from ..api import ImageIndex

        spec = ImageIndex.over(conn).index(table, method)
        return spec, fetch_rows(conn, spec, pks)

    spec, rows = await in_db(db, work)
    urls = Urls(datasette, db.name, table)
    cards = Cards(urls, spec, settings, {})
    items = []
    for pk in pks:
        card = cards.card(result_item(urls, spec, rows, pk))
        items.append({**card, "pk": pk, "image_url": urls.image(pk, method)})
    data = {"a": pks[0], "b": pks[1], "verdict": verdict.to_dict(),
            "differences": differences(facts[0], facts[1], verdict)}
    if request.url_vars.get("format") == ".json":
        return Response.json(data, headers=cache_headers(private))
    context = {"database": db.name, "table": table, "color": database_color(db),
               "private": private, "items": items, "data": data, "verdict": verdict,
               "duplicates_url": urls.duplicates(method=method)}
    html = await datasette.render_template("imgsim_compare.html", context, request=request)
    return Response.html(html, headers=cache_headers(private))
