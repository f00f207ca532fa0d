"""GET /{db}/{table}/-/image/{pk}: a row's image at full size, for the lightbox and the
"original file" link: the original bytes of a browser-native image (JPEG, PNG, GIF, WebP),
a large JPEG rendering of RAW, HEIC, TIFF or a video's frame. The same permission and root
rules as thumbnails (files.allowed_file through thumbnails.image_source), and a size cap."""
from __future__ import annotations

import asyncio

from datasette import Response
from datasette.utils import tilde_decode
from datasette.views.base import DatasetteError

from .. import thumbnails
from ..errors import ImageError, ThumbnailError
from .permissions import visible_table
from .render import config, http_error
from .thumbnail_page import row_image_source


async def image_view(datasette, request):
    db, table, private = await visible_table(datasette, request)
    pk = tilde_decode(request.url_vars["pk"])
    method = request.args.get("method") or None
    settings = config(datasette, db.name, table)
    limit = int(settings.get("max_image_bytes") or thumbnails.DEFAULT_MAX_FULL_BYTES)

    source = await row_image_source(db, table, pk, method, settings)
    loop = asyncio.get_running_loop()
    try:
        etag = '"' + thumbnails.cache_key(source, 0, "full") + '"'
        headers = {"ETag": etag,
                   "Cache-Control": f"{'private' if private else 'public'}, max-age=3600",
                   "X-Content-Type-Options": "nosniff"}
        if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
            return Response("", status=304, headers=headers)
        cache = thumbnails.get_cache(settings.get("thumbnail_cache_dir"),
                                     settings.get("thumbnail_cache_bytes"))
        body, content_type = await loop.run_in_executor(
            None, thumbnails.full_image, source, cache, limit)
        name = await loop.run_in_executor(
            None, thumbnails.download_name, source, f"{table}-{pk}", content_type)
    except ThumbnailError as e:
        raise http_error(e)
    except ImageError as e:
        raise DatasetteError(f"cannot show this image: {e}", status=422)
    headers["Content-Disposition"] = thumbnails.content_disposition(name)
    return Response(body, status=200, headers=headers, content_type=content_type)
