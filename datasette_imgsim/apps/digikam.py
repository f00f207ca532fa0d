"""digiKam (7.x/8.x, SQLite core database digikam4.db).

Layout (core/libs/database/collection/collectionmanager*.cpp): a file is
  <album root path> + Albums.relativePath ("/" for the root album, else "/2020/Trip") + "/" + Images.name.
An album root's path comes from AlbumRoots.identifier + specificPath:
  volumeid:?uuid=U        the volume with filesystem UUID U, mounted anywhere; specificPath "/Pictures" below it
  volumeid:?label=L       same, by volume label (removable media without UUID)
  volumeid:?mountpath=M   a volume identified by its mount point M
  volumeid:?path=P        path-only fallback: the root is P itself (specificPath "/")
  networkshareid:?mountpath=M[&mountpath=M2]   a network share mounted at M (first one that exists)
Roots that cannot be found here (volume not mounted, folder missing) are skipped, with a note
saying how many photos that leaves out. Only Images.category = 1 (Image; 2 video, 3 audio, 4 other) with status = 1 (Visible; 2 hidden,
3 trashed, 4 obsolete) are photos to index (coredbconstants.h).
"""
from __future__ import annotations

import os
from typing import Callable, Optional
from urllib.parse import unquote

from . import PhotoList
from ._schema import has_columns, quote_literal, tables
from .volumes import mount_point

IMAGE_CATEGORY = 1
VISIBLE_STATUS = 1
TITLE_COMMENT = 3  # DatabaseComment::Title


def parse_identifier(identifier: str) -> tuple[str, list[tuple[str, str]]]:
    """("volumeid", [("uuid", "1234-ABCD")]) from "volumeid:?uuid=1234-ABCD" (a QUrl; '+' is literal)."""
    scheme, _, rest = (identifier or "").partition(":")
    query = rest.split("?", 1)[1] if "?" in rest else ""
    items = []
    for part in query.split("&"):
        key, sep, value = part.partition("=")
        if sep:
            items.append((unquote(key), unquote(value)))
    return scheme.lower(), items


def _below(base: str, specific_path: Optional[str]) -> str:
    specific = (specific_path or "/").strip("/")
    return os.path.join(base, specific) if specific else base


class DigikamApp:
    name = "digikam"
    title = "digiKam"
    description = "digiKam photo manager (digikam4.db): photos in all album roots, any mounted volume"

    def detect(self, conn) -> bool:
        schema = tables(conn)
        return (has_columns(schema, "AlbumRoots", ["id", "identifier", "specificPath"])
                and has_columns(schema, "Albums", ["id", "albumRoot", "relativePath"])
                and has_columns(schema, "Images", ["id", "album", "name", "status", "category"]))

    def resolve_root(self, identifier: str, specific_path: Optional[str], volumes: dict,
                     find_mount: Callable[..., Optional[str]] = mount_point) -> tuple[Optional[str], Optional[str]]:
        """(absolute root path or None, why not) for one AlbumRoots row."""
        scheme, items = parse_identifier(identifier)
        query = {key: value for key, value in reversed(items)}  # first value wins, like QUrlQuery
        given = {str(k).lower(): v for k, v in (volumes or {}).items()}
        if scheme == "volumeid" and "uuid" in query:
            uuid = query["uuid"]
            mount = given.get(uuid.lower()) or find_mount(uuid, "/dev/disk/by-uuid")
            return (_below(mount, specific_path), None) if mount else (None, f"volume UUID {uuid} not mounted")
        if scheme == "volumeid" and "label" in query:
            label = query["label"]
            mount = given.get(label.lower()) or find_mount(label, "/dev/disk/by-label")
            return (_below(mount, specific_path), None) if mount else (None, f"volume labelled {label!r} not mounted")
        if scheme == "volumeid" and "mountpath" in query:
            return _below(query["mountpath"], specific_path), None
        if scheme == "volumeid" and "path" in query:
            return _below(query["path"], specific_path), None
        if scheme == "networkshareid":
            paths = [value for key, value in items if key == "mountpath"]
            if paths:
                return _below(next((p for p in paths if os.path.isdir(p)), paths[0]), specific_path), None
        return None, f"album root identifier {identifier!r} not understood"

    def photo_list(self, conn, options: Optional[dict] = None, find_mount=mount_point) -> PhotoList:
        options = options or {}
        schema = tables(conn)
        roots, notes = {}, []
        for root_id, identifier, specific_path in conn.execute(
                "select id, identifier, specificPath from AlbumRoots order by id"):
            path, problem = self.resolve_root(identifier, specific_path, options.get("volumes") or {}, find_mount)
            if path and os.path.isdir(path):
                roots[root_id] = os.path.realpath(path)
                continue
            if path:  # e.g. a path-only root on a disk that is not plugged in
                problem = f"album root folder not found: {path}"
            skipped = conn.execute(
                "select count(*) from Images join Albums on Albums.id = Images.album "
                "where Albums.albumRoot = ? and Images.category = ? and Images.status = ?",
                (root_id, IMAGE_CATEGORY, VISIBLE_STATUS)).fetchone()[0]
            hint = "; pass --volume UUID=PATH" if "UUID" in problem else ""
            notes.append(f"{problem}: {skipped} photos skipped{hint}")
        # The resolved root paths become a literal table joined to Albums, so the SQL needs no
        # functions or parameters and runs as-is on a read-only connection.
        root_rows = " union all ".join(
            f"select {int(root_id)}, {quote_literal(path.rstrip('/'))}" for root_id, path in roots.items())
        root_cte = root_rows or "select null, null where 0"
        if has_columns(schema, "ImageComments", ["imageid", "type", "language", "comment"]):
            # The Title comment, preferring the default language, else the file name.
            caption = ("coalesce((select c.comment from ImageComments c where c.imageid = i.id"
                       f" and c.type = {TITLE_COMMENT} and c.comment <> ''"
                       " order by c.language = 'x-default' desc, c.id limit 1), i.name)")
        else:
            caption = "i.name"
        has_info = has_columns(schema, "ImageInformation", ["imageid", "creationDate"])
        sql = (
            f"with roots(id, path) as ({root_cte})\n"
            "select i.id as id,\n"
            "  roots.path || case when a.relativePath = '/' then '' else a.relativePath end || '/' || i.name as path,\n"
            f"  {caption} as title,\n"
            f"  {'ii.creationDate' if has_info else 'null'} as creationDate\n"
            "from Images i\n"
            "join Albums a on a.id = i.album\n"
            "join roots on roots.id = a.albumRoot\n"
            f"{'left join ImageInformation ii on ii.imageid = i.id' + chr(10) if has_info else ''}"
            f"where i.category = {IMAGE_CATEGORY} and i.status = {VISIBLE_STATUS}\n"
            "order by i.id"
        )
        versions_sql = None
        if has_columns(schema, "ImageRelations", ["subject", "object", "type"]):
            # DatabaseRelation::DerivedFrom = 1: subject is a version derived from object.
            versions_sql = "select subject as key, object as version_of from ImageRelations where type = 1"
        return PhotoList(app=self.name, name="Images", sql=sql, key_column="id", image_column="path",
                         caption_column="title", date_column="creationDate",
                         roots=tuple(dict.fromkeys(roots.values())), versions_sql=versions_sql, notes=tuple(notes))


APP = DigikamApp()
