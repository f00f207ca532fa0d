"""demo.db: the tracked demo database and its configuration (demo/datasette.yaml)."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import datasette
import pytest
import yaml
from datasette.app import Datasette

ROOT = Path(__file__).resolve().parent.parent
DEMO_DB = ROOT / "demo.db"
CONFIG = ROOT / "demo" / "datasette.yaml"
METHODS = {"cnn", "histogram", "hog", "phash"}
IS_1_0 = not datasette.__version__.startswith("0.")


@pytest.fixture(scope="module")
def conn():
    # Read-only and immutable: the tests never touch the tracked file.
    conn = sqlite3.connect(f"file:{DEMO_DB}?mode=ro&immutable=1", uri=True)
    yield conn
    conn.close()


def test_file_is_small_and_in_rollback_mode():
    assert DEMO_DB.stat().st_size < 15 * 1024 * 1024
    # WAL mode would make every reader create -wal/-shm files beside the tracked file.
    assert DEMO_DB.read_bytes()[18:20] == b"\x01\x01"


def test_photos(conn):
    count = conn.execute("select count(*) from photos").fetchone()[0]
    assert 60 <= count <= 120
    columns = [r[1] for r in conn.execute("pragma table_info(photos)")]
    for column in ["id", "title", "filename", "taken_at", "camera", "width", "height",
                   "source", "author", "licence", "image"]:
        assert column in columns
    blank = conn.execute(
        "select id from photos where trim(coalesce(licence, '')) = '' "
        "or trim(coalesce(author, '')) = '' or trim(coalesce(source, '')) = ''").fetchall()
    assert blank == []
    # Stored JPEGs, long side at most 800 px, width/height true to the bytes.
    from PIL import Image
    import io

    for pk, width, height, data in conn.execute("select id, width, height, image from photos"):
        image = Image.open(io.BytesIO(data))
        assert image.format == "JPEG", pk
        assert image.size == (width, height), pk
        assert max(image.size) <= 800, pk
    variants = conn.execute("select count(*) from photos where variant_of is not null").fetchone()[0]
    assert variants >= 5


def test_every_method_indexes_every_row(conn):
    photos = conn.execute("select count(*) from photos").fetchone()[0]
    indexes = dict(conn.execute(
        "select method, id from _imgsim_indexes where table_name = 'photos'").fetchall())
    assert set(indexes) == METHODS
    for method, index_id in indexes.items():
        ok, failed = conn.execute(
            "select count(*) filter (where error is null), count(*) filter (where error is not null) "
            "from _imgsim_items where index_id = ?", (index_id,)).fetchone()
        assert (method, ok, failed) == (method, photos, 0)


def test_labels(conn):
    photos = conn.execute("select count(*) from photos").fetchone()[0]
    labelled = conn.execute(
        "select count(distinct pk) from _imgsim_labels where table_name = 'photos'").fetchone()[0]
    assert labelled == photos
    assert conn.execute(
        "select count(*) from _imgsim_labels where label like '%spaniel%'").fetchone()[0] > 0


def demo_datasette() -> Datasette:
    settings = yaml.safe_load(CONFIG.read_text())
    if IS_1_0:
        # 1.0a: canned queries come from config (-c), title and licence from metadata (-m).
        return Datasette([str(DEMO_DB)], metadata=settings, config=settings)
    return Datasette([str(DEMO_DB)], metadata=settings)


def canned_queries() -> list[str]:
    return list(yaml.safe_load(CONFIG.read_text())["databases"]["demo"]["queries"])


@pytest.mark.asyncio
async def test_title_and_licence_shown():
    ds = demo_datasette()
    await ds.invoke_startup()
    response = await ds.client.get("/")
    assert response.status_code == 200
    assert "datasette-imgsim demo" in response.text
    assert "Each photo under its own licence" in response.text


@pytest.mark.asyncio
@pytest.mark.parametrize("name", canned_queries())
async def test_canned_query_runs(name):
    ds = demo_datasette()
    await ds.invoke_startup()
    response = await ds.client.get(f"/demo/{name}.json?_shape=array")
    assert response.status_code == 200, response.text
    rows = response.json()
    assert isinstance(rows, list) and rows, name


@pytest.mark.asyncio
async def test_canned_queries_find_the_variants():
    ds = demo_datasette()
    await ds.invoke_startup()
    # Photo 7's neighbours from 2018 (the Lomiri wallpapers), nearest first.
    rows = (await ds.client.get("/demo/similar_same_year.json?_shape=array")).json()
    assert all(row["taken_at"].startswith("2018") for row in rows)
    assert [r["distance"] for r in rows] == sorted(r["distance"] for r in rows)
    dogs = (await ds.client.get("/demo/labelled_dog.json?_shape=array")).json()
    titles = {row["title"] for row in dogs}
    assert "Friends" in titles and "Friends (crop)" in titles
    pairs = (await ds.client.get("/demo/near_duplicates.json?_shape=array")).json()
    variant_pairs = {(r["id"], r["other_id"]) for r in pairs}
    conn = sqlite3.connect(f"file:{DEMO_DB}?mode=ro&immutable=1", uri=True)
    re_encoded = conn.execute(
        "select variant_of, id from photos where edit like 're-encoded%'").fetchall()
    conn.close()
    assert set(re_encoded) <= variant_pairs


@pytest.mark.asyncio
async def test_duplicates_page_groups_the_demo_copies_with_their_originals():
    ds = demo_datasette()
    await ds.invoke_startup()
    data = (await ds.client.get("/demo/photos/-/duplicates.json")).json()
    # demo.db carries its verdicts: the page verifies nothing.
    assert data["pairs"]["verified"] == data["pairs"]["settled"] == 0 and data["pairs"]["cached"]
    best_of = {m["pk"]: g["members"][0]["pk"] for g in data["groups"] for m in g["members"]}
    conn = sqlite3.connect(f"file:{DEMO_DB}?mode=ro&immutable=1", uri=True)
    variants = conn.execute("select id, variant_of, edit from photos where variant_of is not null")
    copies = [(v, o, edit) for v, o, edit in variants
              if edit.split(":")[0] in ("crop", "greyscale", "re-encoded", "mirrored")]
    bursts = conn.execute("select id from photos where edit like 'burst%'").fetchall()
    conn.close()
    assert len(copies) >= 9
    for variant, original, edit in copies:
        assert best_of.get(variant) == original, (variant, original, edit)
    assert not any(pk in best_of for (pk,) in bursts)  # another frame is not a copy
