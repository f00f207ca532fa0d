"""Pages and JSON: thin over search, store and thumbnails; permissions checked in visible_table()."""
from __future__ import annotations

import asyncio
import re
import secrets
import time
from email.message import Message
from typing import Any, Optional
from urllib.parse import urlencode

from datasette import Response
from datasette.utils import tilde_decode, tilde_encode
from datasette.utils.asgi import Forbidden, NotFound as HTTPNotFound
from datasette.views.base import DatasetteError
from markupsafe import Markup, escape

from . import thumbnails
from .images import ImageError
from .search import SearchError, embed_image, parse_k, similar_to_row, similar_to_vector
from .source import image_value
from .store import NotFound, Store, quote_identifier

PLUGIN = "datasette-imgsim"
DEFAULT_MAX_UPLOAD = 20 * 1024 * 1024
# Room in a multipart body for the other fields and the part headers.
MULTIPART_SLACK = 64 * 1024
CELL_SIZE = 96
GRID_SIZE = 256
LARGE_SIZE = 768
INDEX_CACHE_SECONDS = 5.0

SEGMENT = r"[^/]+"
ROUTES = [
    (rf"^/(?P<database>{SEGMENT})/(?P<table>{SEGMENT})/-/similar/(?P<pk>[^/]+?)(?P<format>\.json)?$",
     "similar_row_view"),
    (rf"^/(?P<database>{SEGMENT})/(?P<table>{SEGMENT})/-/similar(?P<format>\.json)?$",
     "similar_upload_view"),
    (rf"^/(?P<database>{SEGMENT})/(?P<table>{SEGMENT})/-/thumbnail/(?P<pk>{SEGMENT})$",
     "thumbnail_view"),
]


def routes():
    return [(pattern, globals()[name]) for pattern, name in ROUTES]


class UploadError(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


# --- the one permission check ------------------------------------------------------------

async def visible_table(datasette, request) -> tuple[Any, str, bool]:
    """The (database, table, private) a request names, if the actor may view that table.

    403 when the actor may not view it, checked first so that a denied actor learns
    nothing, not even which tables exist; then 404 for an unknown table. Both before
    any pk, distance or pixel is read.
    """
    route = tilde_decode(request.url_vars["database"])
    table = tilde_decode(request.url_vars["table"])
    try:
        db = datasette.get_database(route=route)
    except KeyError:
        raise HTTPNotFound(f"database not found: {route}")
    if hasattr(datasette, "allowed"):  # Datasette 1.0a: resource-based permissions
        from datasette.resources import TableResource

        visible, private = await datasette.check_visibility(
            request.actor, action="view-table",
            resource=TableResource(database=db.name, table=table))
    else:  # Datasette 0.65
        visible, private = await datasette.check_visibility(
            request.actor, permissions=[("view-table", (db.name, table)),
                                        ("view-database", db.name), "view-instance"])
    if not visible:
        raise Forbidden("You do not have permission to view this table")
    if not (await db.table_exists(table) or table in await db.view_names()):
        raise HTTPNotFound(f"table not found: {table}")
    return db, table, private


def database_color(db) -> str:
    """The colour Datasette gives a database's headings (1.0a: db.color; 0.65: computed)."""
    color = getattr(db, "color", None)
    if color:
        return color
    import hashlib

    return (db.hash or hashlib.md5(db.name.encode("utf8")).hexdigest())[:6]


def config(datasette, database: str, table: str) -> dict:
    return datasette.plugin_config(PLUGIN, database=database, table=table) or {}


async def in_db(db, fn):
    """Run fn(conn) in Datasette's database thread, turning the user's errors into responses."""
    try:
        return await db.execute_fn(fn)
    except NotFound as e:
        raise DatasetteError(str(e), status=404)
    except (SearchError, ImageError, ValueError) as e:
        raise DatasetteError(str(e), status=400)


# --- rows and URLs -----------------------------------------------------------------------

class Urls:
    def __init__(self, datasette, db, table: str):
        self.datasette, self.db, self.table = datasette, db, table
        self.base = datasette.urls.table(db.name, table)

    def similar(self, pk, suffix: str = "", **args) -> str:
        query = urlencode({k: v for k, v in args.items() if v is not None})
        return (f"{self.base}/-/similar/{tilde_encode(str(pk))}{suffix}"
                + (f"?{query}" if query else ""))

    def upload(self, **args) -> str:
        query = urlencode({k: v for k, v in args.items() if v is not None})
        return f"{self.base}/-/similar" + (f"?{query}" if query else "")

    def thumbnail(self, pk, size: int, method: Optional[str] = None) -> str:
        args = {"size": size}
        if method:
            args["method"] = method
        return f"{self.base}/-/thumbnail/{tilde_encode(str(pk))}?{urlencode(args)}"

    def row(self, row_path: Optional[str], pk_column: str, pk) -> str:
        if row_path is not None:
            return self.datasette.urls.row(self.db.name, self.table, row_path)
        # Views have no row pages: a filter on the key column finds the row.
        return f"{self.base}?{urlencode({pk_column: pk})}"


def json_value(value):
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$blob": True, "bytes": len(value)}
    return value


def fetch_rows(conn, spec, pks: list) -> dict:
    """{pk: (row_path or None, {column: value})} for the rows with these keys."""
    if not pks:
        return {}
    from datasette.utils import detect_primary_keys

    is_view = bool(conn.execute(
        "select 1 from sqlite_master where type = 'view' and name = ?", (spec.table,)).fetchone())
    key = "rowid" if spec.pk == "rowid" else quote_identifier(spec.pk)
    table_pks = [] if is_view else detect_primary_keys(conn, spec.table)
    use_rowid = not is_view and not table_pks
    select = "rowid as __imgsim_rowid, *" if use_rowid else "*"
    found = {}
    for start in range(0, len(pks), 500):
        chunk = pks[start:start + 500]
        cursor = conn.execute(
            f"select {key} as __imgsim_pk, {select} from {quote_identifier(spec.table)} "
            f"where {key} in ({', '.join('?' * len(chunk))})", chunk)
        names = [d[0] for d in cursor.description]
        for values in cursor:
            row = dict(zip(names, values))
            pk = row.pop("__imgsim_pk")
            if use_rowid:
                rowid = row.pop("__imgsim_rowid")
                row = {"rowid": rowid, **row}
                row_path = tilde_encode(str(rowid))
            elif is_view:
                row_path = None
            else:
                row_path = ",".join(tilde_encode(str(row[c])) for c in table_pks)
            found[pk] = (row_path, row)
    return found


def lookup(found: dict, pk):
    """A fetched row by key, matching '7' to 7 as URLs and SQL mix them."""
    if pk in found:
        return found[pk]
    for candidate, value in found.items():
        if str(candidate) == str(pk):
            return value
    return None, {}


def caption(row: dict, spec) -> str:
    """A short human label for a row: its first text column other than the image and key."""
    for name, value in row.items():
        if name in (spec.column, spec.pk, "rowid") or not isinstance(value, str):
            continue
        if value.strip():
            return value[:80]
    return ""


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


def payload(db, spec, query: dict, results: list) -> dict:
    return {"database": db.name, "table": spec.table, "method": spec.method,
            "metric": spec.metric, "query": query, "results": results}


def method_links(urls_for, specs, current: str) -> list[dict]:
    return [{"method": s.method, "metric": s.metric, "url": urls_for(s.method),
             "current": s.method == current} for s in specs]


# --- GET /db/table/-/similar/pk ----------------------------------------------------------

async def similar_row_view(datasette, request):
    db, table, private = await visible_table(datasette, request)
    pk = tilde_decode(request.url_vars["pk"])
    method = request.args.get("method") or None
    k = request.args.get("k") or None
    rerank = request.args.get("rerank") or None

    def work(conn):
        store = Store(conn)
        spec, results = similar_to_row(store, table, pk, k, method, rerank)
        stored_pk = conn.execute("select pk from _imgsim_items where item_id = ?",
                                 (store.item_id(spec, pk),)).fetchone()[0]
        found = fetch_rows(conn, spec, [stored_pk] + [r["pk"] for r in results])
        return spec, store.indexes(table), stored_pk, results, found

    spec, specs, stored_pk, results, found = await in_db(db, work)
    urls = Urls(datasette, db, table)
    items = [result_item(urls, spec, found, r) for r in results]
    if request.url_vars.get("format") == ".json":
        return Response.json(payload(db, spec, {"pk": stored_pk}, items),
                             headers=cache_headers(private))
    query = page_item(urls, spec, result_item(urls, spec, found, stored_pk), method, k)
    query["large_url"] = urls.thumbnail(stored_pk, LARGE_SIZE, spec.method)
    context = {
        "database": db.name, "color": database_color(db), "table": table, "spec": spec, "k": len(items) if k is None else k,
        "query": query, "upload": None, "rerank": rerank,
        "results": [page_item(urls, spec, item, method, k) for item in items],
        "methods": method_links(lambda m: urls.similar(stored_pk, method=m, k=k), specs, spec.method),
        "upload_url": urls.upload(method=method), "table_url": urls.base,
        "json_url": urls.similar(stored_pk, ".json", method=method, k=k),
        "private": private,
    }
    html = await datasette.render_template("imgsim_similar.html", context, request=request)
    return Response.html(html, headers=cache_headers(private))


def cache_headers(private: bool) -> dict:
    return {"Cache-Control": "private, no-cache"} if private else {}


# --- GET/POST /db/table/-/similar --------------------------------------------------------

async def similar_upload_view(datasette, request):
    db, table, private = await visible_table(datasette, request)
    as_json = request.url_vars.get("format") == ".json"
    urls = Urls(datasette, db, table)
    limit = int(config(datasette, db.name, table).get("max_upload_bytes") or DEFAULT_MAX_UPLOAD)
    specs = await db.execute_fn(lambda conn: Store(conn).indexes(table))
    if not specs:
        raise DatasetteError(f"table {table!r} has no image index; run: datasette imgsim index "
                             f"{db.name}.db --table {table} --column COLUMN", status=404)
    context = {"database": db.name, "color": database_color(db), "table": table, "max_upload_bytes": limit,
               "table_url": urls.base, "form_url": urls.upload(), "error": None,
               "specs": specs, "method": request.args.get("method") or None,
               "k": request.args.get("k") or "", "results": None, "upload": None}

    async def form_page(status: int = 200):
        html = await datasette.render_template("imgsim_upload.html", context, request=request)
        return Response.html(html, status=status, headers=cache_headers(private))

    if request.method != "POST":
        if as_json:
            raise DatasetteError("POST an image (multipart field 'image', or the raw bytes) "
                                 "to this URL", status=405)
        return await form_page()

    try:
        data, fields = await read_upload(request, limit)
        check_form_csrf(datasette, request, fields)
    except UploadError as e:
        if as_json:
            return Response.json({"ok": False, "error": str(e)}, status=e.status)
        context["error"] = str(e)
        return await form_page(e.status)
    method = fields.get("method") or request.args.get("method") or None
    k = fields.get("k") or request.args.get("k") or None
    rerank = fields.get("rerank") or request.args.get("rerank") or None
    context.update(method=method, k=k or "", rerank=rerank)

    loop = asyncio.get_running_loop()

    def search(conn):
        results = similar_to_vector(Store(conn), spec, vector, k, rerank, data)
        return results, fetch_rows(conn, spec, [r["pk"] for r in results])

    try:
        parse_k(k)
        spec = await db.execute_fn(lambda conn: Store(conn).index(table, method))
        # Decoding and embedding take tens of milliseconds of CPU: not on a database
        # thread, where they would hold up every other query of this database.
        vector = await loop.run_in_executor(None, embed_image, spec, data)
        results, found = await db.execute_fn(search)
    except (NotFound, SearchError, ImageError, ValueError) as e:
        status = 404 if isinstance(e, NotFound) else 400
        message = f"not an image we can read: {e}" if isinstance(e, ImageError) else str(e)
        if as_json:
            return Response.json({"ok": False, "error": message}, status=status)
        context["error"] = message
        return await form_page(status)
    items = [result_item(urls, spec, found, r) for r in results]
    if as_json:
        return Response.json(payload(db, spec, {"upload": True}, items),
                             headers=cache_headers(private))
    preview = await loop.run_in_executor(None, thumbnails.data_url, data, LARGE_SIZE // 2)
    context.update(spec=spec, upload={"preview": preview, "bytes": len(data)},
                   results=[page_item(urls, spec, item, method, k) for item in items])
    return await form_page()


# --- CSRF on Datasette 0.65 -------------------------------------------------------------
#
# 0.65 protects POSTs with asgi-csrf, whose multipart parser fails with python-multipart
# >= 0.0.26 (a TypeError, so a 500, simonw/asgi-csrf#38). For multipart POSTs to the
# upload route only, skip_csrf hands the check to check_form_csrf(), which applies
# asgi-csrf's own rule: with cookies, the form's csrftoken must equal the signed
# ds_csrftoken cookie. 1.0a checks Sec-Fetch-Site/Origin itself and has no skip_csrf.

UPLOAD_PATH = re.compile(r"/[^/]+/[^/]+/-/similar(\.json)?$")


def is_multipart_upload(scope) -> bool:
    headers = dict(scope.get("headers") or [])
    content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
    return (scope.get("method") == "POST" and content_type == b"multipart/form-data"
            and bool(UPLOAD_PATH.search(scope.get("path", ""))))


def skip_csrf(datasette, scope) -> bool:
    return not hasattr(datasette, "allowed") and is_multipart_upload(scope)


def check_form_csrf(datasette, request, fields: dict) -> None:
    if hasattr(datasette, "allowed") or not is_multipart_upload(request.scope):
        return
    if not request.headers.get("cookie"):
        return  # as asgi-csrf: no cookies, no ambient credentials to abuse
    if request.headers.get("authorization", "").startswith("Bearer "):
        return
    from itsdangerous import BadSignature, URLSafeSerializer

    cookie = request.cookies.get("ds_csrftoken", "")
    try:
        URLSafeSerializer(datasette._secret).loads(cookie, "csrftoken")
    except BadSignature:
        cookie = ""
    if not cookie or not secrets.compare_digest(fields.get("csrftoken", ""), cookie):
        raise UploadError("CSRF check failed: reload the page and try again", 403)


async def read_upload(request, limit: int) -> tuple[bytes, dict]:
    """The uploaded image and the form's other fields, reading at most about limit bytes."""
    content_type = request.headers.get("content-type", "")
    multipart = content_type.split(";")[0].strip().lower() == "multipart/form-data"
    body_limit = limit + (MULTIPART_SLACK if multipart else 0)
    too_large = f"upload too large: the limit is {limit:,} bytes ({limit / 1024 / 1024:.1f} MB)"
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > body_limit:
        raise UploadError(too_large, 413)
    body = bytearray()
    while True:
        message = await request.receive()
        if message.get("type") == "http.disconnect":
            raise UploadError("the upload was interrupted")
        body.extend(message.get("body", b""))
        if len(body) > body_limit:
            raise UploadError(too_large, 413)
        if not message.get("more_body"):
            break
    if not multipart:
        data, fields = bytes(body), {}
    else:
        parts = parse_multipart(bytes(body), content_type)
        fields = {name: value.decode("utf-8", "replace") for name, (filename, value) in parts.items()
                  if filename is None}
        data = parts.get("image", (None, b""))[1]
    if not data:
        raise UploadError("no image uploaded: send a file in the form field 'image'")
    if len(data) > limit:
        raise UploadError(too_large, 413)
    return data, fields


def _header_params(name: str, value: str) -> Message:
    message = Message()
    message[name] = value
    return message


def parse_multipart(body: bytes, content_type: str) -> dict[str, tuple[Optional[str], bytes]]:
    """{field name: (filename or None, bytes)} of a multipart/form-data body.

    Datasette 0.65 has no multipart parser (1.0a's request.form(files=True) is not in it),
    so both versions use this one, on a body already bounded by read_upload.
    """
    boundary = _header_params("content-type", content_type).get_param("boundary")
    if not boundary or not isinstance(boundary, str):
        raise UploadError("malformed multipart upload: no boundary")
    # A delimiter is CRLF "--" boundary (RFC 2046); the first one may open the body.
    chunks = (b"\r\n" + body).split(b"\r\n--" + boundary.encode("latin-1"))
    if len(chunks) < 3:
        raise UploadError("malformed multipart upload")
    parts = {}
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break
        head, sep, content = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise UploadError("malformed multipart upload")
        disposition = ""
        for line in head.decode("utf-8", "replace").split("\r\n"):
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-disposition":
                disposition = value.strip()
        params = _header_params("content-disposition", disposition)
        field = params.get_param("name", header="content-disposition")
        if not isinstance(field, str):
            continue
        filename = params.get_param("filename", header="content-disposition")
        parts.setdefault(field, (filename if isinstance(filename, str) else None, content))
    return parts


# --- GET /db/table/-/thumbnail/pk --------------------------------------------------------

async def thumbnail_view(datasette, request):
    db, table, private = await visible_table(datasette, request)
    pk = tilde_decode(request.url_vars["pk"])
    size = thumbnails.parse_size(request.args.get("size"))
    fmt = thumbnails.parse_format(request.args.get("format"))
    method = request.args.get("method") or None
    settings = config(datasette, db.name, table)

    def work(conn):
        spec = Store(conn).index(table, method)
        return spec, image_value(conn, spec, pk)

    spec, value = await in_db(db, work)
    loop = asyncio.get_running_loop()
    try:
        source = await loop.run_in_executor(None, thumbnails.image_source, value, spec.root)
    except thumbnails.ThumbnailError as e:
        raise DatasetteError(str(e), status=e.status)
    etag = '"' + thumbnails.cache_key(source, size, fmt) + '"'
    headers = {"ETag": etag,
               "Cache-Control": f"{'private' if private else 'public'}, max-age=3600"}
    if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
        return Response("", status=304, headers=headers)
    cache = thumbnails.get_cache(settings.get("thumbnail_cache_dir"),
                                 settings.get("thumbnail_cache_bytes"))
    try:
        body = await loop.run_in_executor(None, thumbnails.thumbnail, source, size, fmt, cache)
    except thumbnails.ThumbnailError as e:
        raise DatasetteError(str(e), status=e.status)
    except ImageError as e:
        raise DatasetteError(f"cannot make a thumbnail: {e}", status=422)
    return Response(body, status=200, headers=headers, content_type=thumbnails.FORMATS[fmt][1])


# --- entry points on Datasette's own pages -----------------------------------------------

_index_cache: dict = {}


async def indexed_tables(datasette, database: str) -> dict:
    """{table: (image column, pk column)} of a database's indexes, cached for a few seconds
    because render_cell asks for every cell."""
    now = time.monotonic()
    key = (id(datasette), database)
    hit = _index_cache.get(key)
    if hit and now - hit[0] < INDEX_CACHE_SECONDS:
        return hit[1]
    tables = {}
    try:
        db = datasette.get_database(database)
        if await db.table_exists("_imgsim_indexes"):
            rows = await db.execute(
                "select table_name, image_column, pk_column from _imgsim_indexes order by id")
            for table, column, pk in rows.rows:
                tables.setdefault(table, (column, pk))
    except Exception:
        # Entry points are decoration: a database that cannot be asked gets none.
        tables = {}
    _index_cache[key] = (now, tables)
    return tables


def render_cell(datasette, database, table, column, row, value):
    if not table or not database:
        return None

    async def inner():
        found = (await indexed_tables(datasette, database)).get(table)
        if not found or found[0] != column or value is None:
            return None
        pk_column = found[1]
        try:
            pk = row[pk_column]
        except (IndexError, KeyError):
            return None
        base = datasette.urls.table(database, table)
        encoded = tilde_encode(str(pk))
        return Markup(
            '<a class="imgsim-cell" href="{similar}" title="Find similar images">'
            '<img src="{thumb}" alt="{alt}" loading="lazy" '
            'style="max-width:{size}px;max-height:{size}px;display:block">'
            '<span>similar images</span></a>'
        ).format(similar=f"{base}/-/similar/{encoded}",
                 thumb=f"{base}/-/thumbnail/{encoded}?size={CELL_SIZE}",
                 alt=escape(str(value) if isinstance(value, str) else f"image {pk}"),
                 size=CELL_SIZE)

    return inner


def table_actions(datasette, database, table):
    async def inner():
        if table and table in await indexed_tables(datasette, database):
            return [{"href": f"{datasette.urls.table(database, table)}/-/similar",
                     "label": "Search by image",
                     "description": "Upload an image and find the most similar ones here"}]
        return []

    return inner


def row_actions(datasette, database, table, row):
    async def inner():
        found = (await indexed_tables(datasette, database)).get(table)
        if not found:
            return []
        try:
            pk = row[found[1]]
        except (IndexError, KeyError):
            return []
        return [{"href": f"{datasette.urls.table(database, table)}/-/similar/{tilde_encode(str(pk))}",
                 "label": "Find similar images",
                 "description": "The images in this table that look most like this row's"}]

    return inner
