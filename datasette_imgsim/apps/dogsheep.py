"""dogsheep-photos (`dogsheep-photos apple-photos` output: table apple_photos, one row per Apple Photos asset).

apple_photos.path is the absolute path of the original in the Photos library (NULL when the original
lives only in iCloud); rows flagged as movies or missing are not photos to index. An edited version
(path_edited) is listed in versions_sql.
"""
from __future__ import annotations

from typing import Optional

from . import PhotoList
from ._schema import covering_folders, has_columns, tables


class DogsheepApp:
    name = "dogsheep"
    title = "dogsheep-photos"
    description = "dogsheep-photos database (apple_photos table from Apple Photos)"

    def detect(self, conn) -> bool:
        return has_columns(tables(conn), "apple_photos", ["uuid", "path"])

    def photo_list(self, conn, options: Optional[dict] = None) -> PhotoList:
        schema = tables(conn)
        has = lambda column: has_columns(schema, "apple_photos", [column])  # noqa: E731
        where = ["path is not null", "path <> ''"]
        where += [f"coalesce({c}, 0) = 0" for c in ("ismovie", "ismissing") if has(c)]
        if has("isphoto"):
            where.append("coalesce(isphoto, 1) <> 0")
        title = "coalesce(nullif(title, ''), filename)" if has("title") and has("filename") else "null"
        date = "date" if has("date") else "null"
        condition = " and ".join(where)
        sql = (f"select uuid, path, {title} as title, {date} as date\nfrom apple_photos\n"
               f"where {condition}\norder by {date}, uuid")
        versions_sql = None
        if has("path_edited"):
            versions_sql = ("select uuid || ':edited' as key, uuid as version_of, path_edited as path "
                            "from apple_photos where path_edited is not null and path_edited <> ''")
        paths = [r[0] for r in conn.execute(f"select path from apple_photos where {condition}")]
        skipped = conn.execute(f"select count(*) from apple_photos where not ({condition})").fetchone()[0]
        notes = ()
        if skipped:
            notes = (f"{skipped} rows without a local photo file skipped (movies, missing or iCloud-only)",)
        return PhotoList(app=self.name, name="apple_photos", sql=sql, key_column="uuid", image_column="path",
                         caption_column="title", date_column=None if date == "null" else "date",
                         roots=covering_folders(paths), versions_sql=versions_sql, notes=notes)


APP = DogsheepApp()
