"""The user's rows as pages show them: fetched by key, captioned, made JSON-safe."""
from __future__ import annotations

from datasette.utils import detect_primary_keys, tilde_encode

from ..store import key_candidates, quote_identifier

CHUNK = 500


def json_value(value):
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$blob": True, "bytes": len(value)}
    return value


def fetch_rows(conn, spec, pks: list) -> dict:
    """{pk: (row_path or None, {column: value})} for the rows with these keys."""
    if not pks:
        return {}
    if spec.source_sql:
        return _fetch_query_rows(conn, spec, pks)
    is_view = bool(conn.execute(
        "select 1 from sqlite_master where type = 'view' and name = ?", (spec.table,)).fetchone())
    key = "rowid" if spec.pk == "rowid" else quote_identifier(spec.pk)
    table_pks = [] if is_view else detect_primary_keys(conn, spec.table)
    use_rowid = not is_view and not table_pks
    select = "rowid as __imgsim_rowid, *" if use_rowid else "*"
    found = {}
    for start in range(0, len(pks), CHUNK):
        chunk = pks[start:start + CHUNK]
        cursor = conn.execute(
            f"select {key} as __imgsim_pk, {select} from {quote_identifier(spec.table)} "
            f"where {key} in ({', '.join('?' * len(chunk))})", chunk)
        names = [d[0] for d in cursor.description]
        for values in cursor:
            row = dict(zip(names, values))
            pk = row.pop("__imgsim_pk")
            if use_rowid:
                rowid = row.pop("__imgsim_rowid")
                row = {"rowid": rowid, **row}
                row_path = tilde_encode(str(rowid))
            elif is_view:
                row_path = None
            else:
                row_path = ",".join(tilde_encode(str(row[c])) for c in table_pks)
            found[pk] = (row_path, row)
    return found


def lookup(found: dict, pk):
    """A fetched row by key, matching '7' to 7 as URLs and SQL mix them."""
    for candidate in key_candidates(pk):
        if candidate in found:
            return found[candidate]
    return None, {}


def caption(row: dict, spec) -> str:
    """A short human label for a row: its first text column other than the image and key."""
    for name, value in row.items():
        if name in (spec.column, spec.pk, "rowid") or not isinstance(value, str):
            continue
        if value.strip():
            return value[:80]
    return ""


def _fetch_query_rows(conn, spec, pks: list) -> dict:
    """Rows of an index over a query (an app preset): the query's columns; the row page is
    the app table's own when the index is named after a table whose key is the query's."""
    key = quote_identifier(spec.pk)
    is_table = bool(conn.execute(
        "select 1 from sqlite_master where type = 'table' and name = ?", (spec.table,)).fetchone())
    own_pages = is_table and detect_primary_keys(conn, spec.table) == [spec.pk]
    found = {}
    for start in range(0, len(pks), CHUNK):
        chunk = pks[start:start + CHUNK]
        cursor = conn.execute(f"select * from ({spec.source_sql}) where {key} in "
                              f"({', '.join('?' * len(chunk))})", chunk)
        names = [d[0] for d in cursor.description]
        for values in cursor:
            row = dict(zip(names, values))
            pk = row[spec.pk]
            found[pk] = (tilde_encode(str(pk)) if own_pages else None, row)
    return found
