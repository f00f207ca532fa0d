"""Any SQLite database with one table of photos: a file-path column or an image BLOB column.

A table qualifies when it has a column named path/filepath/filename/file (any case), or a BLOB column
named like image/photo/data/thumbnail/jpeg, or a BLOB/untyped column whose first non-null value starts
with JPEG, PNG, GIF, WebP or HEIC/AVIF magic bytes. sqlite_*, _imgsim_* and virtual tables are
ignored. detect() is True only for exactly one qualifying table; with several, the caller picks one
(options["table"], the CLI's --table). Relative paths stay relative: the indexer resolves them
against the database's folder.
"""
from __future__ import annotations

import os
import re
from typing import Optional

from ..store.connection import SQLITE_ERRORS

from ..errors import SourceError
from . import PhotoList
from ..store.schema import is_internal
from ._schema import covering_folders, quote_identifier, tables

PATH_COLUMNS = ("path", "filepath", "filename", "file")  # preference order
BLOB_NAME = re.compile(r"image|photo|picture|data|thumb|jpe?g|png|webp|heic", re.I)
CAPTION_COLUMNS = ("title", "caption", "name", "label", "description")
DATE_COLUMNS = ("date_taken", "taken", "datetime", "date", "created", "created_at", "timestamp", "time")


def looks_like_image(value) -> bool:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        return False
    head = bytes(value[:16])
    return (head.startswith(b"\xff\xd8\xff") or head.startswith(b"\x89PNG\r\n\x1a\n")
            or head[:6] in (b"GIF87a", b"GIF89a") or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")
            or (head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"mif1", b"msf1", b"avif", b"heim", b"heis")))


class GenericApp:
    name = "generic"
    title = "Generic photo table"
    description = "any database with one table of image paths or image BLOBs"

    def candidates(self, conn) -> dict[str, tuple[str, str]]:
        """{table: (image column, "path" | "blob")} for every qualifying table."""
        schema = tables(conn)
        try:
            virtual = {r[0] for r in conn.execute(
                "select name from sqlite_master where type = 'table' and sql like 'create virtual table%'")}
        except SQLITE_ERRORS:
            return {}
        found = {}
        for table, columns in schema.items():
            if is_internal(table) or table in virtual:
                continue
            column = self._image_column(conn, table, columns)
            if column:
                found[table] = column
        return found

    def _image_column(self, conn, table, columns) -> Optional[tuple[str, str]]:
        by_name = {name.lower(): name for name, _ in columns}
        for wanted in PATH_COLUMNS:
            if wanted in by_name:
                return by_name[wanted], "path"
        for name, declared in columns:
            if "BLOB" in declared.upper() and BLOB_NAME.search(name):
                return name, "blob"
        for name, declared in columns[:64]:
            if declared == "" or "BLOB" in declared.upper():
                try:
                    row = conn.execute(f"select {quote_identifier(name)} from {quote_identifier(table)} "
                                       f"where {quote_identifier(name)} is not null limit 1").fetchone()
                except SQLITE_ERRORS:
                    continue
                if row and looks_like_image(row[0]):
                    return name, "blob"
        return None

    def detect(self, conn) -> bool:
        # An app database that a specific preset knows (darktable's single `images` table has a
        # `filename`) is that app's, not generic: the specific preset knows which rows to skip.
        from . import APPS

        if any(app is not self and app.detect(conn) for app in APPS):
            return False
        return len(self.candidates(conn)) == 1

    def photo_list(self, conn, options: Optional[dict] = None) -> PhotoList:
        options = options or {}
        found = self.candidates(conn)
        table = options.get("table")
        if table is None:
            if len(found) != 1:
                listing = ", ".join(sorted(found)) or "none"
                raise SourceError(f"no single photo table (candidates: {listing}); choose one with --table")
            table = next(iter(found))
        if table not in found:
            raise SourceError(f"table {table!r} has no image path or image BLOB column")
        image, kind = found[table]
        columns = tables(conn)[table]
        key = self._key(conn, table, columns)
        by_name = {name.lower(): name for name, _ in columns}
        caption = next((by_name[c] for c in CAPTION_COLUMNS if c in by_name and by_name[c] != image), None)
        if caption is None and kind == "path":
            caption = image
        date = next((by_name[c] for c in DATE_COLUMNS if c in by_name), None)
        selected = list(dict.fromkeys(c for c in (key, image, caption, date) if c))
        q = quote_identifier
        key_sql = "rowid as rowid" if key == "rowid" else q(key)
        select = ", ".join([key_sql] + [q(c) for c in selected if c != key])
        order = "rowid" if key == "rowid" else q(key)
        sql = f"select {select}\nfrom {q(table)}\nwhere {q(image)} is not null\norder by {order}"
        roots = ()
        if kind == "path":
            values = [r[0] for r in conn.execute(f"select {q(image)} from {q(table)} where {q(image)} is not null")]
            absolute = [v for v in values if isinstance(v, str) and os.path.isabs(v)]
            roots = covering_folders(absolute)
            db_folder = self._db_folder(conn)
            if db_folder and len(absolute) < len(values):
                roots = tuple(dict.fromkeys(roots + (db_folder,)))
        return PhotoList(app=self.name, name=table, sql=sql, key_column=key, image_column=image,
                         caption_column=caption, date_column=date, roots=roots)

    def _key(self, conn, table, columns) -> str:
        info = conn.execute(f"pragma table_info({quote_identifier(table)})").fetchall()
        pk = [r[1] for r in sorted(info, key=lambda r: r[5]) if r[5]]
        if len(pk) == 1:
            return pk[0]
        without_rowid = conn.execute("select sql from sqlite_master where name = ?", (table,)).fetchone()
        if without_rowid and re.search(r"without\s+rowid\s*$", without_rowid[0] or "", re.I):
            raise SourceError(f"table {table!r} has a composite key and no rowid; give it a single-column key")
        return "rowid"

    def _db_folder(self, conn) -> Optional[str]:
        for _, schema_name, file in conn.execute("pragma database_list"):
            if schema_name == "main" and file:
                return os.path.dirname(os.path.realpath(file))
        return None


APP = GenericApp()
