"""Adobe Lightroom Classic (.lrcat catalog).

A photo is an Adobe_images row; its file is Adobe_images.rootFile -> AgLibraryFile (baseName,
extension) -> AgLibraryFolder (pathFromRoot, "Trip/Day 1/" or "" with trailing "/") ->
AgLibraryRootFolder (absolutePath, "/Volumes/Photos/" with trailing "/"). A virtual copy is an
Adobe_images row with masterImage set: same file, other develop settings, so it is not indexed
again; versions_sql lists it against its master. Root folders that do not exist on this machine (a
catalog moved from a Mac, a disk not plugged in) are skipped, with a note.
"""
from __future__ import annotations

import os
from typing import Optional

from . import PhotoList
from ._schema import has_columns, tables

_ROOT = "case when substr(r.absolutePath, -1) = '/' then r.absolutePath else r.absolutePath || '/' end"
_FOLDER = ("case when fo.pathFromRoot = '' or substr(fo.pathFromRoot, -1) = '/' then fo.pathFromRoot"
           " else fo.pathFromRoot || '/' end")
_FILE = "fi.baseName || case when fi.extension <> '' then '.' || fi.extension else '' end"


class LightroomApp:
    name = "lightroom"
    title = "Lightroom Classic"
    description = "Adobe Lightroom Classic catalog (.lrcat): master photos, virtual copies indexed once"

    def detect(self, conn) -> bool:
        schema = tables(conn)
        return (has_columns(schema, "Adobe_images", ["id_local", "rootFile", "masterImage", "captureTime"])
                and has_columns(schema, "AgLibraryFile", ["id_local", "baseName", "extension", "folder"])
                and has_columns(schema, "AgLibraryFolder", ["id_local", "pathFromRoot", "rootFolder"])
                and has_columns(schema, "AgLibraryRootFolder", ["id_local", "absolutePath"]))

    def photo_list(self, conn, options: Optional[dict] = None) -> PhotoList:
        versions_sql = ("select id_local as key, masterImage as version_of from Adobe_images"
                        " where masterImage is not null")
        roots, notes, present = [], [], []
        for root_id, path, count in conn.execute(
                "select r.id_local, r.absolutePath, count(i.id_local) from AgLibraryRootFolder r"
                " left join AgLibraryFolder fo on fo.rootFolder = r.id_local"
                " left join AgLibraryFile fi on fi.folder = fo.id_local"
                " left join Adobe_images i on i.rootFile = fi.id_local and i.masterImage is null"
                " group by r.id_local order by r.id_local"):
            if not path:
                continue
            if os.path.isdir(path):
                roots.append(os.path.realpath(path))
                present.append(int(root_id))
            elif count:
                # A catalog moved from another machine (or a disk not plugged in) keeps paths that do not
                # exist here (/Volumes/..., C:/...): like digiKam's unmounted volumes, skip and say so.
                notes.append(f"root folder not found: {path}: {count} photos skipped")
        sql = (
            f"select i.id_local as id_local, {_ROOT} || {_FOLDER} || {_FILE} as path,\n"
            f"  {_FILE} as filename, i.captureTime as captureTime\n"
            "from Adobe_images i\n"
            "join AgLibraryFile fi on fi.id_local = i.rootFile\n"
            "join AgLibraryFolder fo on fo.id_local = fi.folder\n"
            "join AgLibraryRootFolder r on r.id_local = fo.rootFolder\n"
            f"where i.masterImage is null and r.id_local in ({', '.join(map(str, present)) or 'null'})\n"
            "order by i.id_local"
        )
        return PhotoList(app=self.name, name="Adobe_images", sql=sql, key_column="id_local", image_column="path",
                         caption_column="filename", date_column="captureTime", roots=tuple(dict.fromkeys(roots)),
                         versions_sql=versions_sql, notes=tuple(notes))


APP = LightroomApp()
