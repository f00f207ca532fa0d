"""_imgsim_verdicts: pair verdicts of duplicate finding, kept so that a second run (or
the duplicates page) verifies only pairs it has not seen. A verdict is reused only while
both rows' fingerprints (what the image looked like when indexed) and the verifier's
version are those it was decided with."""
from __future__ import annotations

import json
from typing import Any, Iterable

DDL = """
CREATE TABLE IF NOT EXISTS _imgsim_verdicts (
    table_name TEXT NOT NULL,
    pk_a,
    pk_b,
    checked TEXT NOT NULL,  -- verifier version, fingerprint of a, fingerprint of b
    verdict TEXT NOT NULL,  -- JSON (verify.Verdict)
    PRIMARY KEY (table_name, pk_a, pk_b)
)
"""
TABLE = "_imgsim_verdicts"


def _ordered(a, b) -> tuple[Any, Any, bool]:
    """(first, second, swapped): one stored order per pair, whatever order it is asked in."""
    ka, kb = (type(a).__name__, str(a)), (type(b).__name__, str(b))
    return (a, b, False) if ka <= kb else (b, a, True)


def _checked(version: int, fingerprints: dict, a, b) -> str:
    return f"{version}\x00{fingerprints.get(a, '')}\x00{fingerprints.get(b, '')}"


def exists(conn) -> bool:
    from .schema import has_table

    return has_table(conn, TABLE)


def load(conn, table: str, pairs: Iterable[tuple], fingerprints: dict, version: int) -> dict:
    """{(a, b): verdict dict (a/b as asked)} for the pairs with a current stored verdict."""
    if not exists(conn):
        return {}
    wanted = {}
    for a, b in pairs:
        first, second, swapped = _ordered(a, b)
        wanted[(first, second)] = (a, b, swapped)
    found = {}
    rows = conn.execute(f"select pk_a, pk_b, checked, verdict from {TABLE} where table_name = ?",
                        (table,))
    for pk_a, pk_b, checked, verdict in rows:
        asked = wanted.get((pk_a, pk_b))
        if asked is None or checked != _checked(version, fingerprints, pk_a, pk_b):
            continue
        a, b, swapped = asked
        found[(a, b)] = (json.loads(verdict), swapped)
    return found


def save(conn, table: str, verdicts: dict, fingerprints: dict, version: int) -> int:
    """Store {(a, b): verdict dict}; commits. Returns the number written (0 when the
    database cannot be written: the cache is an optimisation, never a failure)."""
    import sqlite3 as stdlib_sqlite3

    from datasette.utils.sqlite import sqlite3

    rows = []
    for (a, b), verdict in verdicts.items():
        first, second, swapped = _ordered(a, b)
        if swapped:
            verdict = {**verdict, **_swap(verdict)}
        rows.append((table, first, second, _checked(version, fingerprints, first, second),
                     json.dumps(verdict)))
    if not rows:
        return 0
    try:
        with conn:
            conn.execute(DDL)
            conn.executemany(f"insert or replace into {TABLE} values (?, ?, ?, ?, ?)", rows)
    except (sqlite3.Error, stdlib_sqlite3.Error):  # pysqlite3's or the stdlib's connection
        return 0
    return len(rows)


def _swap(verdict: dict) -> dict:
    flip = {"a": "b", "b": "a", None: None}
    return {k: flip.get(verdict.get(k)) for k in ("which_is_source", "grey", "edited")}


def swap(verdict: dict) -> dict:
    """A stored verdict's dict with a and b exchanged."""
    return {**verdict, **_swap(verdict)}


def clear(conn, table: str) -> None:
    """Forget a table's verdicts (its index was dropped); inside the caller's transaction."""
    if exists(conn):
        conn.execute(f"delete from {TABLE} where table_name = ?", (table,))
