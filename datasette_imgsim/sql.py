"""SQL functions: thin wrappers over search that return JSON text for json_each()."""
from __future__ import annotations

import ctypes
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
    if not 2 <= len(args) <= 5:
        raise ImgsimSQLError(
            f"{name}(table, {second} [, k [, method [, rerank]]]) takes 2 to 5 arguments")
    table, value, k, method, rerank = (list(args) + [None, None, None])[:5]
    if not isinstance(table, str):
        raise ImgsimSQLError(f"{name}: table must be a table name")
    if method is not None and not isinstance(method, str):
        raise ImgsimSQLError(f"{name}: method must be a method name")
    return table, value, k, method, rerank


def _borrowed_store(conn):
    """A callable giving a Store over conn without holding a reference to conn.

    A function registered on a connection must not reference that connection:
    the cycle lets the garbage collector free the connection while a cursor of
    it is still pending, and pysqlite3-binary then destroys the functions
    without the GIL and aborts the process. SQLite calls these functions only
    while their connection is alive, so a borrowed reference is safe here.
    """
    address = id(conn)
    return lambda: Store(ctypes.cast(address, ctypes.py_object).value)


def register_functions(conn) -> None:
    store_of = _borrowed_store(conn)

    def similar_images(*args):
        table, pk, k, method, rerank = _arguments("similar_images", args, "pk")
        spec, results = _call(similar_to_row, store_of(), table, pk, k, method, rerank)
        return json.dumps(results)

    def similar_to_image_(*args):
        table, data, k, method, rerank = _arguments("similar_to_image", args, "image")
        if not isinstance(data, bytes):
            raise ImgsimSQLError("similar_to_image: image must be a BLOB of image bytes")
        spec, results = _call(similar_to_image, store_of(), table, data, k, method, rerank)
        return json.dumps(results)

    def imgsim_labels(table, pk):
        return json.dumps([{"label": label, "probability": round(p, 4)}
                           for label, p in _call(store_of().labels, table, pk)])

    conn.create_function("similar_images", -1, similar_images)
    conn.create_function("similar_to_image", -1, similar_to_image_)
    conn.create_function("imgsim_labels", 2, imgsim_labels)
