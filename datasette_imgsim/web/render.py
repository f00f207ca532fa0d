"""What every page shares: plugin config, database colour, cache headers, and the one
place an ImgsimError becomes an HTTP answer."""
from __future__ import annotations

import hashlib

from datasette.views.base import DatasetteError

from ..errors import ImgsimError

PLUGIN = "datasette-imgsim"


def config(datasette, database: str, table: str = None) -> dict:
    return datasette.plugin_config(PLUGIN, database=database, table=table) or {}


def database_color(db) -> str:
    """The colour Datasette gives a database's headings (1.0a: db.color; 0.65: computed)."""
    color = getattr(db, "color", None)
    if color:
        return color
    return (db.hash or hashlib.md5(db.name.encode("utf8")).hexdigest())[:6]


def cache_headers(private: bool) -> dict:
    return {"Cache-Control": "private, no-cache"} if private else {}


def http_error(error: ImgsimError, prefix: str = "") -> DatasetteError:
    return DatasetteError(prefix + str(error), status=error.status)


async def in_db(db, fn):
    """Run fn(conn) in Datasette's database thread, turning the user's errors into responses."""
    try:
        return await db.execute_fn(fn)
    except ImgsimError as e:
        raise http_error(e)
