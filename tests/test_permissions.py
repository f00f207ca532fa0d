"""A denied table leaks nothing through the plugin's own _imgsim_ tables, on both lines.

`tables: {secret: {allow: false}}` (SQL off): every _imgsim_ table that describes secret
(its vectors, sqlite-vec's shadow tables, and the shared items, labels, indexes, roots,
errors) answers 403 and is not listed, while photos' own vector table stays visible.
"""
import sqlite3

import pytest
from click.testing import CliRunner
from datasette.app import Datasette
from datasette.cli import cli

from .helpers import jpeg_bytes

IS_1_0 = hasattr(Datasette, "allowed")


@pytest.fixture(scope="module")
def perm_db(tmp_path_factory, photos):
    folder = tmp_path_factory.mktemp("perm")
    db = folder / "perm.db"
    conn = sqlite3.connect(db)
    for table in ("photos", "secret"):
        conn.execute(f"create table {table} (id integer primary key, image blob)")
        for n, pixels in enumerate(list(photos.values())[:3]):
            conn.execute(f"insert into {table} values (?, ?)", (n + 1, jpeg_bytes(pixels[n:, n:])))
    conn.commit()
    conn.close()
    for table in ("photos", "secret"):
        result = CliRunner().invoke(cli, ["imgsim", "index", str(db), "--table", table, "--column",
                                          "image", "--method", "phash", "--workers", "1",
                                          "--in-place"])
        assert result.exit_code == 0, result.output
    return db


def datasette(db, deny=True):
    block = {"databases": {"perm": {"allow_sql": False,
                                    **({"tables": {"secret": {"allow": False}}} if deny else {})}}}
    return Datasette([str(db)], **{("config" if IS_1_0 else "metadata"): block})


def imgsim_tables(db):
    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute(
            "select name from sqlite_master where type in ('table', 'view') "
            "and name like '\\_imgsim\\_%' escape '\\'")]
    finally:
        conn.close()


@pytest.mark.asyncio
async def test_every_imgsim_table_follows_the_denied_source(perm_db):
    ds = datasette(perm_db)
    tables = imgsim_tables(perm_db)
    secret_tables = [t for t in tables if t.startswith("_imgsim_secret_")]
    photo_tables = [t for t in tables if t.startswith("_imgsim_photos_")]
    shared = [t for t in tables if t not in secret_tables + photo_tables]
    assert secret_tables and photo_tables
    assert {"_imgsim_items", "_imgsim_labels", "_imgsim_indexes", "_imgsim_roots",
            "_imgsim_errors"} <= set(shared)
    assert (await ds.client.get("/perm/secret.json")).status_code == 403
    for table in secret_tables + shared:
        response = await ds.client.get(f"/perm/{table}.json?_shape=array")
        assert response.status_code == 403, (table, response.status_code, response.text[:200])
        assert "secret" not in response.text.replace("You do not have permission", ""), table
    # The leak the issue found, exactly.
    response = await ds.client.get("/perm/_imgsim_labels.json?table_name=secret")
    assert response.status_code == 403
    # photos is allowed: its own vectors are not hidden by secret's rule.
    for table in photo_tables:
        response = await ds.client.get(f"/perm/{table}.json")
        assert response.status_code == 200, (table, response.text[:200])
    listing = (await ds.client.get("/perm.json")).text
    assert "_imgsim_secret_phash" not in listing and "_imgsim_items" not in listing


@pytest.mark.asyncio
async def test_no_rule_no_change(perm_db):
    """Without a denied table every _imgsim_ table stays readable (for its owner's tools)."""
    ds = datasette(perm_db, deny=False)
    for table in imgsim_tables(perm_db):
        response = await ds.client.get(f"/perm/{table}.json")
        assert response.status_code == 200, (table, response.text[:200])


@pytest.mark.asyncio
async def test_plugin_json_routes_answer_403_in_json(perm_db):
    ds = datasette(perm_db)
    for path in ("/perm/secret/-/similar/1.json", "/perm/secret/-/duplicates.json",
                 "/perm/secret/-/similar.json"):
        response = await ds.client.get(path)
        assert response.status_code == 403, (path, response.text[:200])
        assert response.headers["content-type"].startswith("application/json"), path
        assert response.json()["ok"] is False
    # Pages (not .json) keep Datasette's HTML error page.
    response = await ds.client.get("/perm/secret/-/duplicates")
    assert response.status_code == 403 and "<html" in response.text.lower()
