"""GET/POST /{db}/{table}/-/similar[.json]: search by an uploaded image."""
from __future__ import annotations

import asyncio

from datasette import Response
from datasette.views.base import DatasetteError

from .. import decoding, thumbnails
from ..api import ImageIndex
from ..errors import ImageError, ImgsimError, NotFound
from ..search import parse_k
from .links import Urls
from .permissions import visible_table
from .render import cache_headers, config, database_color
from .captions import labels_for
from .results import LARGE_SIZE, Cards, payload, result_item, scored_cards
from .rows import fetch_rows
from .upload import DEFAULT_MAX_UPLOAD, check_form_csrf, read_upload


def human_size(n: int) -> str:
    """20971520 -> "20 MB"; 1536 -> "1.5 KB" (binary units, as file managers show them)."""
    size = float(n)
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            text = f"{size:.1f}".rstrip("0").rstrip(".") if unit != "bytes" else f"{int(size)}"
            return f"{text} {unit}"
        size /= 1024
    return f"{n} bytes"


def user_message(error: ImgsimError) -> str:
    return f"not an image we can read: {error}" if isinstance(error, ImageError) else str(error)


async def similar_upload_view(datasette, request):
    db, table, private = await visible_table(datasette, request)
    as_json = request.url_vars.get("format") == ".json"
    urls = Urls(datasette, db.name, table)
    limit = int(config(datasette, db.name, table).get("max_upload_bytes") or DEFAULT_MAX_UPLOAD)
    specs = await db.execute_fn(lambda conn: ImageIndex.over(conn).store.indexes(table))
    if not specs:
        raise DatasetteError(f"table {table!r} has no image index; run: datasette imgsim index "
                             f"{db.name}.db --table {table} --column COLUMN", status=404)
    context = {"database": db.name, "color": database_color(db), "table": table, "max_upload_bytes": limit,
               "max_upload_human": human_size(limit),
               "table_url": urls.base, "form_url": urls.upload(), "error": None,
               "specs": specs, "method": request.args.get("method") or None,
               "k": request.args.get("k") or "", "results": None, "upload": None}

    async def form_page(status: int = 200):
        html = await datasette.render_template("imgsim_upload.html", context, request=request)
        return Response.html(html, status=status, headers=cache_headers(private))

    async def failed(message: str, status: int):
        if as_json:
            return Response.json({"ok": False, "error": message}, status=status)
        context["error"] = message
        return await form_page(status)

    if request.method != "POST":
        if as_json:
            raise DatasetteError("POST an image (multipart field 'image', or the raw bytes) "
                                 "to this URL", status=405)
        return await form_page()

    try:
        data, fields = await read_upload(request, limit)
        check_form_csrf(datasette, request, fields)
    except ImgsimError as e:
        return await failed(str(e), e.status)
    method = fields.get("method") or request.args.get("method") or None
    k = fields.get("k") or request.args.get("k") or None
    rerank = fields.get("rerank") or request.args.get("rerank") or None
    context.update(method=method, k=k or "", rerank=rerank)

    loop = asyncio.get_running_loop()

    def search(conn):
        matches = ImageIndex.over(conn).similar_to_vector(spec, vector, k, rerank, data)
        results = [m.to_dict() for m in matches]
        keys = [r["pk"] for r in results]
        labels = {} if as_json else labels_for(ImageIndex.over(conn), table, keys)
        return results, fetch_rows(conn, spec, keys), labels

    try:
        parse_k(k)
        spec = await db.execute_fn(lambda conn: ImageIndex.over(conn).index(table, method))
        # Decoding and embedding take tens of milliseconds of CPU: not on a database
        # thread, where they would hold up every other query of this database.
        # In a killable decode worker: an upload whose client goes away stops its decode.
        vector = await decoding.embed(spec, data, request)
        results, found, labels = await db.execute_fn(search)
    except ImgsimError as e:
        return await failed(user_message(e), 404 if isinstance(e, NotFound) else 400)
    items = [result_item(urls, spec, found, r) for r in results]
    if as_json:
        return Response.json(payload(db.name, spec, {"upload": True}, items),
                             headers=cache_headers(private))
    preview = await loop.run_in_executor(None, thumbnails.data_url, data, LARGE_SIZE // 2)
    cards = Cards(urls, spec, config(datasette, db.name, table), labels, method, k)
    context.update(spec=spec, upload={"preview": preview, "bytes": len(data),
                                      "size": human_size(len(data))},
                   results=scored_cards(cards, items))
    return await form_page()
