"""darktable (library.db; film_rolls + images).

A file is film_rolls.folder + "/" + images.filename. A darktable *duplicate* is a second images row
for the same file (same film_id and filename, images.version 1, 2, ...): only the lowest version of
each file is indexed, the others are listed in versions_sql. Film rolls whose folder is not
there (a disk not plugged in) are skipped, with a note. images.datetime_taken is a GTimeSpan
(microseconds since 0001-01-01 00:00:00, common/datetime.c; INTEGER in darktable 4.2's schema);
older libraries hold EXIF text "YYYY:MM:DD HH:MM:SS" (CHAR(20)), which a migration converts. Both
become ISO text "YYYY-MM-DD HH:MM:SS" (camera local time, as darktable shows it).
"""
from __future__ import annotations

import os
from typing import Optional

from . import PhotoList
from ._schema import has_columns, tables

# Seconds from 0001-01-01 to 1970-01-01 (719162 days): GTimeSpan origin to unix epoch.
ORIGIN_TO_EPOCH_SECONDS = 62135596800

_DATETIME = (
    "case\n"
    "    when typeof(i.datetime_taken) = 'integer' and i.datetime_taken > 0\n"
    f"      then datetime(i.datetime_taken / 1000000 - {ORIGIN_TO_EPOCH_SECONDS}, 'unixepoch')\n"
    "    when typeof(i.datetime_taken) = 'text' and length(i.datetime_taken) >= 19\n"
    "      then replace(substr(i.datetime_taken, 1, 10), ':', '-') || substr(i.datetime_taken, 11, 9)\n"
    "  end"
)

# Another row of the same file that sorts first (lower version, then lower id) makes this one a duplicate.
_EARLIER_COPY = (
    "select 1 from images o where o.film_id = i.film_id and o.filename = i.filename\n"
    "    and (coalesce(o.version, 0) < coalesce(i.version, 0)\n"
    "         or (coalesce(o.version, 0) = coalesce(i.version, 0) and o.id < i.id))"
)


class DarktableApp:
    name = "darktable"
    title = "darktable"
    description = "darktable (library.db): every file in the film rolls, duplicates indexed once"

    def detect(self, conn) -> bool:
        schema = tables(conn)
        return (has_columns(schema, "film_rolls", ["id", "folder"])
                and has_columns(schema, "images", ["id", "film_id", "filename", "version", "datetime_taken"]))

    def photo_list(self, conn, options: Optional[dict] = None) -> PhotoList:
        roots, present, notes = [], [], []
        for roll_id, folder, count in conn.execute(
                "select f.id, f.folder, count(i.id) from film_rolls f join images i on i.film_id = f.id"
                " group by f.id order by f.id"):
            if folder and os.path.isabs(folder) and os.path.isdir(folder):
                roots.append(os.path.realpath(folder))
                present.append(int(roll_id))
            else:
                # A film roll on a disk that is not plugged in: skip its files and say so.
                notes.append(f"film roll folder not found: {folder}: {count} images skipped")
        sql = (
            "select i.id as id, f.folder || '/' || i.filename as path, i.filename as filename,\n"
            f"  {_DATETIME} as datetime_taken\n"
            "from images i join film_rolls f on f.id = i.film_id\n"
            f"where f.id in ({', '.join(map(str, present)) or 'null'}) and not exists ({_EARLIER_COPY})\n"
            "order by i.id"
        )
        versions_sql = (
            "select i.id as key, (select o.id from images o where o.film_id = i.film_id and o.filename = i.filename\n"
            "    order by coalesce(o.version, 0), o.id limit 1) as version_of\n"
            f"from images i where exists ({_EARLIER_COPY})"
        )
        return PhotoList(app=self.name, name="images", sql=sql, key_column="id", image_column="path",
                         caption_column="filename", date_column="datetime_taken", roots=tuple(dict.fromkeys(roots)),
                         versions_sql=versions_sql, notes=tuple(notes))

APP = DarktableApp()
