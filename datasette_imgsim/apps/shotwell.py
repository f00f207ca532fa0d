"""Shotwell (photo.db, schema of 0.30.x; PhotoTable/VideoTable/BackingPhotoTable).

PhotoTable.filename is the absolute path of the original. LibraryPhoto flags (src/Photo.vala):
FLAG_HIDDEN 0x1, FLAG_FAVORITE 0x2, FLAG_TRASH 0x4, FLAG_OFFLINE 0x8, FLAG_FLAGGED 0x10; trashed
and offline (file missing) photos are skipped. exposure_time is unix seconds (0 when unknown).

An externally edited photo (PhotoTable.editable_id) and a developed RAW (develop_*_id) point into
BackingPhotoTable: those files are *versions* of the PhotoTable row, not library items of their own,
so the original is what gets indexed and the backing files are listed in versions_sql
(key "BackingPhotoTable:<id>", version_of PhotoTable.id, path, kind). VideoTable rows are not
indexed (photos only); their count is reported in notes.
"""
from __future__ import annotations

from typing import Optional

from . import PhotoList
from ._schema import covering_folders, has_columns, scalar, tables

FLAG_TRASH = 0x4
FLAG_OFFLINE = 0x8
SKIP_FLAGS = FLAG_TRASH | FLAG_OFFLINE

# The file name after the last "/": rtrim() with the set of the name's non-"/" characters strips back
# to the last "/", and its length is where the base name starts.
_BASENAME = "substr(p.filename, length(rtrim(p.filename, replace(p.filename, '/', ''))) + 1)"

_BACKING_LINKS = [("editable_id", "editable"), ("develop_shotwell_id", "developed by shotwell"),
                  ("develop_camera_id", "developed by camera"), ("develop_embedded_id", "embedded preview")]


class ShotwellApp:
    name = "shotwell"
    title = "Shotwell"
    description = "Shotwell photo manager (photo.db): library photos, not trashed or offline"

    def detect(self, conn) -> bool:
        schema = tables(conn)
        return (has_columns(schema, "PhotoTable", ["id", "filename", "exposure_time", "flags", "title"])
                and has_columns(schema, "VersionTable", ["schema_version"]))

    def photo_list(self, conn, options: Optional[dict] = None) -> PhotoList:
        schema = tables(conn)
        where = f"(coalesce(p.flags, 0) & {SKIP_FLAGS}) = 0"
        sql = (
            "select p.id as id, p.filename as filename,\n"
            f"  coalesce(nullif(p.title, ''), {_BASENAME}) as title,\n"
            "  case when p.exposure_time > 0 then datetime(p.exposure_time, 'unixepoch') end as exposure_time\n"
            f"from PhotoTable p\nwhere {where}\norder by p.id"
        )
        notes = []
        trashed = scalar(conn, f"select count(*) from PhotoTable where coalesce(flags, 0) & {FLAG_TRASH}")
        offline = scalar(conn, f"select count(*) from PhotoTable where coalesce(flags, 0) & {FLAG_OFFLINE}"
                               f" and not coalesce(flags, 0) & {FLAG_TRASH}")
        if trashed or offline:
            notes.append(f"{trashed or 0} trashed and {offline or 0} offline photos skipped")
        if has_columns(schema, "VideoTable", ["id", "filename"]):
            videos = scalar(conn, "select count(*) from VideoTable") or 0
            if videos:
                notes.append(f"{videos} videos in VideoTable not indexed (photos only)")
        filenames = [r[0] for r in conn.execute(f"select p.filename from PhotoTable p where {where}")]
        return PhotoList(app=self.name, name="PhotoTable", sql=sql, key_column="id", image_column="filename",
                         caption_column="title", date_column="exposure_time", roots=covering_folders(filenames),
                         versions_sql=self._versions_sql(schema), notes=tuple(notes))

    def _versions_sql(self, schema) -> Optional[str]:
        if not has_columns(schema, "BackingPhotoTable", ["id", "filepath"]):
            return None
        parts = [
            f"select 'BackingPhotoTable:' || b.id as key, p.id as version_of, b.filepath as path, '{kind}' as kind"
            f" from PhotoTable p join BackingPhotoTable b on b.id = p.{column}"
            f" where p.{column} >= 0 and (coalesce(p.flags, 0) & {SKIP_FLAGS}) = 0"
            for column, kind in _BACKING_LINKS if has_columns(schema, "PhotoTable", [column])
        ]
        return "\nunion all\n".join(parts) or None


APP = ShotwellApp()
