"""Versions of one photo, which are not duplicates to delete: rows the photo app itself
declares as versions of one another (its versions_sql: digiKam's versioning relations,
darktable duplicates, Lightroom virtual copies, Shotwell edits), and a camera RAW file
beside the JPEG (or HEIC) the camera wrote of the same shot: same folder, same name."""
from __future__ import annotations

import os
from typing import Any

from .bestcopy import RAW_EXTENSIONS
from .source import SourceTable
from .store import IndexSpec, quote_identifier

DEVELOPED = {".jpg", ".jpeg", ".heic", ".heif", ".hif", ".tif", ".tiff", ".png"}


def raw_pairs(paths: dict) -> dict:
    """{frozenset({a, b}): reason} for keys whose paths are a RAW and a developed file of
    one shot (IMG_0042.CR2 beside IMG_0042.JPG). paths: key -> path text."""
    shots: dict = {}
    for key, path in paths.items():
        folder, name = os.path.split(os.path.normcase(str(path)))
        stem, ext = os.path.splitext(name)
        ext = ext.lower()
        if ext in RAW_EXTENSIONS or ext in DEVELOPED:
            shots.setdefault((folder, stem.lower()), []).append((key, ext in RAW_EXTENSIONS, ext))
    found = {}
    for files in shots.values():
        raws = [f for f in files if f[1]]
        developed = [f for f in files if not f[1]]
        for raw in raws:
            for other in developed:
                found[frozenset((raw[0], other[0]))] = (
                    f"RAW+{other[2].lstrip('.').upper()} pair of one shot")
    return found


def app_pairs(conn, spec: IndexSpec, keys: set) -> dict:
    """{frozenset({a, b}): reason} for indexed rows the app declares versions of one another."""
    sql = spec.source.get("versions_sql")
    if not sql:
        return {}
    try:
        rows = conn.execute(f"select key, version_of from ({sql})").fetchall()
    except Exception:  # noqa: BLE001 - an app's schema we cannot read: no versions known
        return {}
    app = spec.source.get("app") or "the photo app"
    found = {}
    for key, version_of in rows:
        if key in keys and version_of in keys and key != version_of:
            found[frozenset((key, version_of))] = f"versions of one photo in {app}"
    return found


def text_paths(conn, spec: IndexSpec, keys: set) -> dict:
    """key -> path of the indexed rows whose image column holds text (BLOBs have none)."""
    source = SourceTable.of(spec)
    column = quote_identifier(source.column)
    sql = (f"select {source.key_sql()}, {column} from {source._from()} "
           f"where typeof({column}) = 'text'")
    return {key: value for key, value in conn.execute(sql) if key in keys}


def version_pairs(conn, spec: IndexSpec, keys: list) -> dict[Any, str]:
    """Every pair of indexed keys that are versions of one photo, with the reason."""
    wanted = set(keys)
    found = raw_pairs(text_paths(conn, spec, wanted))
    found.update(app_pairs(conn, spec, wanted))
    return found
