"""SQL functions: thin wrappers over search that return JSON text for json_each()."""
from __future__ import annotations

import json

from .images import ImageError
from .search import SearchError, similar_to_image, similar_to_row
from .store import NotFound, Store

USER_ERRORS = (NotFound, SearchError, ImageError, ValueError)


class ImgsimSQLError(Exception):
    """SQLite reports any Python exception as 'user-defined function raised exception';
    the message is kept here for callers who can see the exception chain."""


def _call(fn, *args):
    try:
        return fn(*args)
    except USER_ERRORS as e:
        raise ImgsimSQLError(str(e)) from None


def _arguments(name, args, second):
    if not 2 <= len(args) <= 4:
        raise ImgsimSQLError(f"{name}(table, {second} [, k [, method]]) takes 2 to 4 arguments")
    table, value, k, method = (list(args) + [None, None])[:4]
    if not isinstance(table, str):
        raise ImgsimSQLError(f"{name}: table must be a table name")
    if method is not None and not isinstance(method, str):
        raise ImgsimSQLError(f"{name}: method must be a method name")
    return table, value, k, method


def register_functions(conn) -> None:
    store = Store(conn)

    def similar_images(*args):
        table, pk, k, method = _arguments("similar_images", args, "pk")
        spec, results = _call(similar_to_row, store, table, pk, k, method)
        return json.dumps(results)

    def similar_to_image_(*args):
        table, data, k, method = _arguments("similar_to_image", args, "image")
        if not isinstance(data, bytes):
            raise ImgsimSQLError("similar_to_image: image must be a BLOB of image bytes")
        spec, results = _call(similar_to_image, store, table, data, k, method)
        return json.dumps(results)

    def imgsim_labels(table, pk):
        return json.dumps([{"label": label, "probability": round(p, 4)}
                           for label, p in _call(store.labels, table, pk)])

    conn.create_function("similar_images", -1, similar_images)
    conn.create_function("similar_to_image", -1, similar_to_image_)
    conn.create_function("imgsim_labels", 2, imgsim_labels)
