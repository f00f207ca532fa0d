"""Leaving the photo app's database untouched: the index in a sidecar file, attached when served."""
import hashlib
import json
import sqlite3
import subprocess
import sys

import pytest
from click.testing import CliRunner
from datasette.app import Datasette
from datasette.cli import cli

from datasette_imgsim.store.sidecar import find_sidecar, sidecar_path

from .helpers import row_ids


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(*args):
    return CliRunner().invoke(cli, ["imgsim", *map(str, args)])


@pytest.fixture
def sidecar_indexed(path_db):
    before = digest(path_db)
    sidecar = sidecar_path(path_db)
    result = run("index", path_db, "--table", "photos", "--column", "path", "--index-db", sidecar,
                 "--method", "phash", "--method", "histogram", "--workers", "1")
    assert result.exit_code == 0, result.output
    assert digest(path_db) == before
    return path_db, sidecar


def test_index_db_leaves_the_database_byte_for_byte_unchanged(sidecar_indexed):
    path_db, sidecar = sidecar_indexed
    names = {r[0] for r in sqlite3.connect(path_db).execute("select name from sqlite_master")}
    assert not any(n.startswith("_imgsim") for n in names)
    assert sqlite3.connect(path_db).execute("pragma journal_mode").fetchone()[0] == "delete"
    # A re-run finds the sidecar by convention, without --index-db, and still writes only there.
    result = run("index", path_db, "--table", "photos", "--column", "path", "--method", "phash")
    assert "0 indexed, 9 unchanged" in result.output
    status = json.loads(run("status", path_db, "--json").output)
    assert {s["method"] for s in status} == {"phash", "histogram"}


def test_find_sidecar_convention_and_config(tmp_path):
    db = tmp_path / "photos.db"
    assert sidecar_path(db) == tmp_path / "photos-imgsim.db"
    assert find_sidecar(db) is None
    (tmp_path / "photos-imgsim.db").write_bytes(b"")
    assert find_sidecar(db) == tmp_path / "photos-imgsim.db"
    assert find_sidecar(db, "other.db") == tmp_path / "other.db"


async def sql(ds, db_name, query, **params):
    response = await ds.client.get(f"/{db_name}.json", params={"sql": query, "_shape": "array", **params},
                                   follow_redirects=True)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.asyncio
@pytest.mark.parametrize("immutable", [False, True])
async def test_served_database_finds_its_sidecar(sidecar_indexed, immutable):
    path_db, _ = sidecar_indexed
    ds = Datasette(immutables=[str(path_db)]) if immutable else Datasette([str(path_db)])
    chelsea, crop = (row_ids(path_db, "select id from photos where title = ?", (t,))[0]
                     for t in ("chelsea", "chelsea_crop"))
    rows = await sql(ds, "photos", "select similar_images('photos', :pk, 1, 'phash') as r", pk=chelsea)
    assert json.loads(rows[0]["r"])[0]["pk"] == crop
    # The photo table list is the app's own: no index tables appear in it.
    tables = (await ds.client.get("/photos.json")).json()
    names = [t["name"] for t in tables["tables"]] if isinstance(tables, dict) and "tables" in tables else []
    assert "photos" in names and not any(n.startswith("_imgsim") for n in names)


@pytest.mark.asyncio
async def test_served_index_files_are_memory_mapped_and_other_databases_are_not(sidecar_indexed, tmp_path):
    path_db, _ = sidecar_indexed
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("create table t (x)")
    ds = Datasette([str(path_db), str(other)])

    def mmap_sizes(conn):
        return {schema: conn.execute(f'pragma "{schema}".mmap_size').fetchone()[0]
                for _, schema, _ in conn.execute("pragma database_list").fetchall()}

    photos = await ds.get_database("photos").execute_fn(mmap_sizes)
    assert photos["_imgsim_index"] > 0 and photos["main"] == 0
    assert await ds.get_database("other").execute_fn(mmap_sizes) == {"main": 0}


@pytest.mark.asyncio
async def test_configured_index_db(path_db, tmp_path):
    elsewhere = tmp_path / "indexes" / "my-index.db"
    elsewhere.parent.mkdir()
    assert run("index", path_db, "--table", "photos", "--column", "path", "--index-db", elsewhere,
               "--method", "phash", "--workers", "1").exit_code == 0
    config = {"plugins": {"datasette-imgsim": {"index_db": str(elsewhere)}}}
    try:
        ds = Datasette([str(path_db)], config=config)
    except TypeError:  # Datasette 0.65 reads plugin configuration from metadata
        ds = Datasette([str(path_db)], metadata=config)
    (chelsea,) = row_ids(path_db, "select id from photos where title = 'chelsea'")
    rows = await sql(ds, "photos", "select json_array_length(similar_images('photos', :pk, 3)) as n", pk=chelsea)
    assert rows[0]["n"] == 3


def test_plain_datasette_without_the_plugin_serves_a_sidecar_indexed_database(sidecar_indexed):
    path_db, _ = sidecar_indexed
    script = (
        "import asyncio, sys\n"
        "from datasette.app import Datasette\n"
        "from datasette.plugins import pm\n"
        "import datasette_imgsim\n"
        "pm.unregister(datasette_imgsim)\n"
        "assert not [p for p in pm.get_plugins() if 'imgsim' in getattr(p, '__name__', '')]\n"
        "async def main():\n"
        "    ds = Datasette([sys.argv[1]])\n"
        "    for path in ['/', '/photos', '/photos/photos']:\n"
        "        r = await ds.client.get(path)\n"
        "        assert r.status_code == 200, (path, r.status_code)\n"
        "    print('ok')\n"
        "asyncio.run(main())\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(path_db)], capture_output=True, text=True)
    assert result.stdout.strip() == "ok", result.stderr


@pytest.mark.asyncio
async def test_sidecar_index_decorates_datasettes_own_pages(sidecar_indexed):
    """Thumbnail cells, the table action and the row action, as with an in-database index."""
    from datasette import __version__

    path_db, _ = sidecar_indexed
    ds = Datasette([str(path_db)])
    table = await ds.client.get("/photos/photos")
    assert table.status_code == 200
    assert table.text.count('class="imgsim-cell"') == 9
    assert 'class="imgsim-cell-text">img/chelsea.jpg' in table.text  # the path stays readable
    assert "/photos/photos/-/similar" in table.text and "Search by image" in table.text
    if __version__.startswith("1."):  # row actions are a 1.0a hook
        (chelsea,) = row_ids(path_db, "select id from photos where title = 'chelsea'")
        row = await ds.client.get(f"/photos/photos/{chelsea}")
        assert "Find similar images" in row.text and f"/photos/photos/-/similar/{chelsea}" in row.text
