"""The user's table: validate names, find the key, read (pk, image) rows, fingerprint them."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Union

from .errors import ImageError, NotFound, SourceError
from .images import resolve_path
from .store import is_internal, key_candidates, quote_identifier
from .store.connection import SQLITE_ERRORS


@dataclass(frozen=True)
class SourceTable:
    """Where an index's rows come from: a table or view, or a query (sql) whose result
    has the key and image columns; `table` is then the index's name."""

    table: str
    column: str
    pk: str  # a column name, or "rowid"
    is_view: bool
    sql: Optional[str] = None

    def _from(self) -> str:
        return f"({self.sql})" if self.sql else quote_identifier(self.table)

    def key_sql(self) -> str:
        return "rowid" if self.pk == "rowid" and not self.sql else quote_identifier(self.pk)

    def read_sql(self) -> str:
        """(key, key's type, image, image's type), text read as bytes: a value that is
        not valid UTF-8 would otherwise stop the whole read (iter_rows decodes)."""
        key, column = self.key_sql(), quote_identifier(self.column)
        return (f"select case when typeof({key}) = 'text' then cast({key} as blob) "
                f"else {key} end, typeof({key}), "
                f"case when typeof({column}) = 'text' then cast({column} as blob) "
                f"else {column} end, typeof({column}) from {self._from()}")

    def select_sql(self, extra_where: str = "") -> str:
        return (
            f"select {self.key_sql()}, {quote_identifier(self.column)} from {self._from()}"
            + (f" where {extra_where}" if extra_where else "")
        )

    def row_sql(self) -> str:
        return self.select_sql(f"{self.key_sql()} = ?")

    def count_sql(self) -> str:
        return f"select count(*) from {self._from()}"

    @classmethod
    def of(cls, spec) -> "SourceTable":
        """The source an index was built from (IndexSpec)."""
        return cls(spec.table, spec.column, spec.pk, False, spec.source_sql)


def describe_query(conn, name: str, sql: str, column: str, pk: str) -> SourceTable:
    """Check that a query runs and returns the key and image columns."""
    if not name or not isinstance(name, str):
        raise SourceError("an index over a query needs a name: --name NAME")
    if not pk:
        raise SourceError("an index over a query needs its key column: --pk COLUMN")
    statement = sql.strip().rstrip(";")
    if not statement.lower().startswith(("select", "with")):
        raise SourceError("--sql must be a single SELECT statement")
    try:
        cursor = conn.execute(f"select * from ({statement}) limit 0")
    except SQLITE_ERRORS as e:
        raise SourceError(f"the query does not run: {e}") from None
    columns = [d[0] for d in cursor.description]
    for wanted, option in ((pk, "--pk"), (column, "--column")):
        if wanted not in columns:
            raise SourceError(f"the query has no column {wanted!r} for {option}; "
                              f"columns: {', '.join(columns)}")
    return SourceTable(name, column, pk, False, statement)


def describe_source(conn, table: str, column: str, pk: Optional[str] = None) -> SourceTable:
    """Check that table and column exist and work out the key column."""
    row = conn.execute(
        "select type from sqlite_master where name = ? and type in ('table', 'view')", (table,)
    ).fetchone()
    if row is None:
        names = [r[0] for r in conn.execute(
            "select name from sqlite_master where type in ('table','view') order by name")
            if not is_internal(r[0])]
        raise SourceError(
            f"no table or view named {table!r}" + (f"; tables: {', '.join(names[:20])}" if names else "")
        )
    is_view = row[0] == "view"
    info = conn.execute(f"pragma table_xinfo({quote_identifier(table)})").fetchall()
    columns = [r[1] for r in info]
    if column not in columns:
        raise SourceError(f"table {table!r} has no column {column!r}; columns: {', '.join(columns)}")
    if pk is not None:
        if pk != "rowid" and pk not in columns:
            raise SourceError(f"table {table!r} has no column {pk!r} to use as --pk")
        if pk == "rowid" and is_view:
            raise SourceError(f"{table!r} is a view, which has no rowid: name its key with --pk")
        return SourceTable(table, column, pk, is_view)
    if is_view:
        raise SourceError(f"{table!r} is a view: name a column that identifies its rows with --pk")
    pk_columns = sorted((r[5], r[1]) for r in info if r[5])
    if len(pk_columns) == 1:
        return SourceTable(table, column, pk_columns[0][1], False)
    without_rowid = conn.execute(
        "select sql like '%without rowid%' from sqlite_master where name = ?", (table,)
    ).fetchone()[0]
    if without_rowid:
        raise SourceError(f"{table!r} has a composite key and no rowid: name one unique column with --pk")
    return SourceTable(table, column, "rowid", False)


def blob_fingerprint(data: bytes) -> str:
    """What identifies a BLOB image's content: its length and a content hash."""
    return f"blob:{len(data)}:{hashlib.blake2b(data, digest_size=16).hexdigest()}"


def file_fingerprint(stat: os.stat_result) -> str:
    """What identifies a version of an image file: size and modification time (cheap,
    and changes when the file does)."""
    return f"file:{stat.st_size}:{stat.st_mtime_ns}"


def fingerprint(value: Any, root: Union[str, os.PathLike]) -> tuple[Optional[str], Any]:
    """What identifies this version of a row's image, and the source to load it from.

    NULL or empty: (None, None), meaning no image; a file that is not there: "missing".
    A value no image can come from (a number, a path with a NUL byte or of absurd
    length): ImageError, with a message for the row's error.
    """
    if value is None:
        return None, None
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        if not data:
            return None, None
        return blob_fingerprint(data), data
    if not isinstance(value, str):
        raise ImageError(f"not an image path or BLOB: the {type(value).__name__} value "
                         f"{str(value)[:40]}")
    text = value.strip()
    if not text:
        return None, None
    if "\x00" in text:
        raise ImageError("the image path contains a NUL byte")
    if len(text) > MAX_PATH:
        raise ImageError(f"the image path is too long: {len(text):,} characters "
                         f"(limit {MAX_PATH:,})")
    path = resolve_path(text, root)
    try:
        stat = path.stat()
    except (OSError, ValueError):
        return "missing", str(path)
    return file_fingerprint(stat), str(path)


# Longer than any real path (PATH_MAX is 4096 on Linux).
MAX_PATH = 4096


def _text(data: bytes) -> str:
    """Text the database holds, decoded: invalid UTF-8 (a file name in another encoding)
    keeps its bytes as surrogates, as os.fsdecode does, so the file can still be found."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("utf-8", "surrogateescape")


def image_value(conn, spec, pk) -> Any:
    """The image column's value (path, BLOB or NULL) of one indexed row.

    spec is the row's IndexSpec; a key that arrived as text (a URL) also matches an
    integer key. NotFound when no row has that key."""
    source = SourceTable.of(spec)
    column = quote_identifier(source.column)
    # Text read as bytes and decoded here: a value that is not UTF-8 is a path to look
    # for (or to refuse), not an exception on a SQL thread.
    sql = (f"select typeof({column}), case when typeof({column}) = 'text' then "
           f"cast({column} as blob) else {column} end from {source._from()} "
           f"where {source.key_sql()} = ?")
    for candidate in key_candidates(pk):
        row = conn.execute(sql, (candidate,)).fetchone()
        if row is not None:
            return _text(bytes(row[1])) if row[0] == "text" else row[1]
    raise NotFound(f"row {pk!r} not found in {spec.table!r}")


def iter_rows(conn, source: SourceTable, batch: int = 256) -> Iterator[tuple[Any, Any]]:
    """(key, image value) of every row; text is decoded here, so that a value that is
    not valid UTF-8 costs its row (an error row), not the whole read."""
    cursor = conn.execute(source.read_sql())
    while True:
        rows = cursor.fetchmany(batch)
        if not rows:
            return
        for key, key_type, value, value_type in rows:
            if key_type == "text":
                key = bytes(key).decode("utf-8", "replace")
            if value_type == "text":
                value = _text(bytes(value))
            yield key, value


def check_keys(conn, source: SourceTable, unique: bool = True) -> None:
    """--pk must identify the rows: never NULL, never twice (SourceError naming a value
    that is not). Checked before an index run writes anything. unique=False: the key
    is the table's own primary key, unique by SQLite's constraint."""
    if source.pk == "rowid" and not source.sql:
        return
    key = source.key_sql()
    name = "the key" if source.sql else f"--pk {source.pk!r}"
    try:
        nulls = conn.execute(f"select count(*) from {source._from()} where {key} is null").fetchone()[0]
        if nulls:
            raise SourceError(f"{name} is NULL in {nulls:,} row{'s' if nulls != 1 else ''} of "
                              f"{source.table!r}: name a column that identifies every row "
                              "with --pk")
        if not unique:
            return
        row = conn.execute(
            f"select typeof(k), cast(k as blob), n from (select {key} as k, count(*) as n "
            f"from {source._from()} group by {key} having count(*) > 1 limit 1)").fetchone()
    except SQLITE_ERRORS as e:
        raise SourceError(f"cannot check the keys of {source.table!r}: {e}") from None
    if row is not None:
        kind, raw, count = row
        value = bytes(raw).decode("utf-8", "replace") if kind == "text" else raw
        if kind == "blob":
            value = f"<{len(raw)} byte BLOB>"
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        raise SourceError(f"{name} is not unique in {source.table!r}: {shown} is the key of "
                          f"{count:,} rows; name a column that identifies every row with --pk")


def count_rows(conn, source: SourceTable) -> int:
    return conn.execute(source.count_sql()).fetchone()[0]


def default_root(db_path: Union[str, os.PathLike]) -> str:
    return str(Path(db_path).resolve().parent)
