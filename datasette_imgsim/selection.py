"""What an index run reads: a table, a query (--sql), or an app preset's photo list; and
the folders its image files may then be served from."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

from . import apps
from .errors import SourceError
from .files import absolute, covering_folders
from .source import SourceTable, describe_query, describe_source, iter_rows


@dataclass
class Selection:
    source: SourceTable
    app: Optional[str] = None  # the preset's name
    source_params: dict = field(default_factory=dict)  # kept in the index definition
    roots: tuple = ()  # folders the preset names (album roots, film rolls...)
    notes: tuple = ()


def select(conn, table: Optional[str] = None, column: Optional[str] = None,
           pk: Optional[str] = None, sql: Optional[str] = None, name: Optional[str] = None,
           app: Optional[str] = None, volumes: Optional[dict] = None) -> Selection:
    """The rows to index, as the user named them, or as the database's app preset lists them."""
    if sql:
        if not column:
            raise SourceError("an index over a query needs its image column: --column COLUMN")
        source = describe_query(conn, name, sql, column, pk)
        return Selection(source, source_params={"sql": source.sql})
    if table and column:
        return Selection(describe_source(conn, table, column, pk))
    if app:
        preset = apps.get_app(app)
    elif table:
        preset = apps.get_app("generic")
    else:
        preset = apps.detect_app(conn)
        if preset is None:
            raise SourceError(
                "no photo table recognised in this database (apps: "
                + ", ".join(a.name for a in apps.list_apps())
                + "): name one with --table TABLE --column COLUMN, or index a query with --sql")
    photos = preset.photo_list(conn, {"volumes": volumes or {}, "table": table})
    if photos.app == "generic":
        # A plain table: indexed as one, so its rows keep their pages and links.
        source = describe_source(conn, photos.name, photos.image_column, pk or photos.key_column)
        return Selection(source, photos.app, roots=photos.roots, notes=photos.notes)
    source = SourceTable(name or photos.name, photos.image_column, photos.key_column, False,
                         photos.sql)
    params = {"sql": photos.sql, "app": photos.app, "caption_column": photos.caption_column,
              "date_column": photos.date_column, "versions_sql": photos.versions_sql}
    return Selection(source, photos.app, {k: v for k, v in params.items() if v is not None},
                     photos.roots, photos.notes)


def derived_roots(conn, source: SourceTable, base: str, given=()) -> tuple[str, ...]:
    """The folders an index's files lie in, beyond base and the given roots: the fewest
    folders that hold every absolute path the rows name."""
    paths = []
    for _, value in iter_rows(conn, source):
        if isinstance(value, str) and value.strip() and "\x00" not in value:
            paths.append(absolute(value.strip(), base))
    known = [os.path.normpath(r) for r in (base, *given)]
    outside = [p for p in paths
               if not any(p.startswith(root.rstrip(os.sep) + os.sep) for root in known)]
    return covering_folders(outside)
