"""The SQL functions inside Datasette, composed with ordinary SQL."""
import json

import pytest
from datasette.app import Datasette

from .helpers import index_photos, jpeg_bytes, row_ids


@pytest.fixture
def indexed_db(path_db):
    return index_photos(path_db, "histogram", "phash")


async def query(db, sql, **params):
    ds = Datasette([str(db)])
    response = await ds.client.get(f"/{db.stem}.json", params={"sql": sql, "_shape": "array", **params},
                                   follow_redirects=True)
    return response


def ids(db, *titles):
    return [row_ids(db, "select id from photos where title = ?", (t,))[0] for t in titles]


@pytest.mark.asyncio
async def test_similar_images_returns_json_nearest_first(indexed_db):
    chelsea, crop = ids(indexed_db, "chelsea", "chelsea_crop")
    response = await query(indexed_db, "select similar_images('photos', :pk, 3, 'phash') as r", pk=chelsea)
    assert response.status_code == 200, response.text
    results = json.loads(response.json()[0]["r"])
    assert [r["pk"] for r in results][0] == crop
    assert chelsea not in [r["pk"] for r in results]
    assert len(results) == 3
    distances = [r["distance"] for r in results]
    assert distances == sorted(distances)


@pytest.mark.asyncio
async def test_join_back_with_json_each_and_filter(indexed_db):
    (chelsea,) = ids(indexed_db, "chelsea")
    sql = """
        select photos.title, similar.value ->> 'distance' as distance
        from json_each(similar_images('photos', :pk, 20)) as similar
        join photos on photos.id = similar.value ->> 'pk'
        where photos.title like '%o%'
        order by distance
    """
    response = await query(indexed_db, sql, pk=chelsea)
    rows = response.json()
    assert rows and all("o" in r["title"] for r in rows)
    # No method named: the table's default index (the first built, histogram).
    assert [r["title"] for r in rows][0] == "chelsea_crop"


@pytest.mark.asyncio
async def test_similar_to_image_finds_an_image_not_in_the_database(indexed_db, photos):
    from datasette_imgsim.sql import register_functions
    from datasette_imgsim.store import connect

    (crop,) = ids(indexed_db, "chelsea_crop")
    upload = jpeg_bytes(photos["chelsea"][40:260, 60:400], quality=75)
    conn = connect(str(indexed_db))
    register_functions(conn)
    results = json.loads(conn.execute("select similar_to_image('photos', ?, 2, 'histogram')",
                                      (upload,)).fetchone()[0])
    assert results[0]["pk"] in ids(indexed_db, "chelsea", "chelsea_crop")


@pytest.mark.asyncio
@pytest.mark.parametrize("sql", [
    "select similar_images('nope', 1)",
    "select similar_images('photos\"; drop table photos; --', 1)",
    "select similar_images('photos', 1, 5, 'phash\" or 1=1 --')",
    "select similar_images('photos', 1, -3)",
    "select similar_images(null, 1)",
    "select similar_images('photos', 1, 'ten')",
    "select similar_images('photos', 1, 0)",
    "select similar_images('photos', 1, 5, 'magic')",
    "select similar_images('photos', 999999)",
    "select similar_images('photos')",
    "select similar_to_image('photos', 'not bytes')",
    "select similar_to_image('photos', x'00010203')",
])
async def test_bad_arguments_are_sql_errors_not_crashes(indexed_db, sql):
    response = await query(indexed_db, sql)
    assert response.status_code == 400
    assert "error" in response.json() or response.json().get("ok") is False
    # Nothing was dropped or damaged by a hostile name.
    assert (await query(indexed_db, "select count(*) as n from photos")).json()[0]["n"] == 9


@pytest.mark.asyncio
async def test_k_is_capped(indexed_db):
    from datasette_imgsim.store import MAX_K

    (chelsea,) = ids(indexed_db, "chelsea")
    response = await query(indexed_db, f"select json_array_length(similar_images('photos', {chelsea}, 100000)) as n")
    assert response.json()[0]["n"] == 8  # every other row, and no error for a huge k
    assert MAX_K == 1000
