"""SQL functions: thin wrappers over api.ImageIndex that return JSON text for json_each()."""
from __future__ import annotations

import ctypes
import json

from .api import ImageIndex
from .errors import ImgsimError


class ImgsimSQLError(Exception):
    """SQLite reports any Python exception as 'user-defined function raised exception';
    the message is kept here for callers who can see the exception chain."""


def _call(fn, *args):
    try:
        return fn(*args)
    except ImgsimError as e:
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


def _borrowed_index(conn):
    """A callable giving an ImageIndex over conn without holding a reference to conn.

    A function registered on a connection must not reference that connection:
    the cycle lets the garbage collector free the connection while a cursor of
    it is still pending, and pysqlite3-binary then destroys the functions
    without the GIL and aborts the process. SQLite calls these functions only
    while their connection is alive, so a borrowed reference is safe here.
    """
    address = id(conn)
    return lambda: ImageIndex.over(ctypes.cast(address, ctypes.py_object).value)


def _json(matches) -> str:
    return json.dumps([m.to_dict() for m in matches])


def register_functions(conn) -> None:
    index_of = _borrowed_index(conn)

    def similar_images(*args):
        table, pk, k, method, rerank = _arguments("similar_images", args, "pk")
        return _json(_call(index_of().similar_to_row, table, pk, k, method, rerank))

    def similar_to_image(*args):
        table, data, k, method, rerank = _arguments("similar_to_image", args, "image")
        if not isinstance(data, bytes):
            raise ImgsimSQLError("similar_to_image: image must be a BLOB of image bytes")
        return _json(_call(index_of().similar_to_image, table, data, k, method, rerank))

    def imgsim_labels(table, pk):
        return json.dumps([{"label": label, "probability": round(p, 4)}
                           for label, p in _call(index_of().labels, table, pk)])

    conn.create_function("similar_images", -1, similar_images)
    conn.create_function("similar_to_image", -1, similar_to_image)
    conn.create_function("imgsim_labels", 2, imgsim_labels)
