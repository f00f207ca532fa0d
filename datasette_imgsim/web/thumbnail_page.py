"""GET /{db}/{table}/-/thumbnail/{pk}: a row's image, shrunk, cached, never from outside its root."""
from __future__ import annotations

import asyncio

from datasette import Response
from datasette.utils import tilde_decode
from datasette.views.base import DatasetteError

from .. import thumbnails
from ..api import ImageIndex
from ..errors import ImageError, ThumbnailError
from ..source import image_value
from .permissions import visible_table
from .render import config, http_error, in_db


async def row_image_source(db, table: str, pk, method, settings: dict) -> thumbnails.ImageSource:
    """A row's image as an ImageSource: its BLOB, or a regular file under the index's
    allowed roots (and the plugin config's); the one lookup of every page that serves
    a row's pixels."""
    def work(conn):
        images = ImageIndex.over(conn)
        spec = images.index(table, method)
        return spec, image_value(conn, spec, pk), images.store.roots(table)

    spec, value, roots = await in_db(db, work)
    roots += [str(root) for root in settings.get("roots") or ()]
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(None, thumbnails.image_source, value, spec.root, roots)
    except ThumbnailError as e:
        raise http_error(e)


async def thumbnail_view(datasette, request):
    db, table, private = await visible_table(datasette, request)
    pk = tilde_decode(request.url_vars["pk"])
    size = thumbnails.parse_size(request.args.get("size"))
    fmt = thumbnails.parse_format(request.args.get("format"))
    method = request.args.get("method") or None
    settings = config(datasette, db.name, table)

    source = await row_image_source(db, table, pk, method, settings)
    loop = asyncio.get_running_loop()
    etag = '"' + thumbnails.cache_key(source, size, fmt) + '"'
    headers = {"ETag": etag,
               "Cache-Control": f"{'private' if private else 'public'}, max-age=3600"}
    if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
        return Response("", status=304, headers=headers)
    cache = thumbnails.get_cache(settings.get("thumbnail_cache_dir"),
                                 settings.get("thumbnail_cache_bytes"))
    try:
        body = await loop.run_in_executor(None, thumbnails.thumbnail, source, size, fmt, cache)
    except ThumbnailError as e:
        raise http_error(e)
    except ImageError as e:
        raise DatasetteError(f"cannot make a thumbnail: {e}", status=422)
    return Response(body, status=200, headers=headers, content_type=thumbnails.FORMATS[fmt][1])
