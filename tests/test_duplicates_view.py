"""The duplicates page and its JSON, on Datasette 0.65 and 1.0a."""
from __future__ import annotations

import sqlite3

import pytest
from datasette_test import actor_cookie

from .helpers import jpeg_bytes, query_dict
from .test_views import index, make_datasette


@pytest.fixture
def dup_db(path_db, photos):
    """path_db plus a recompressed and an exact copy of the rocket."""
    folder = path_db.parent / "img"
    (folder / "rocket_q40.jpg").write_bytes(jpeg_bytes(photos["rocket"], quality=40))
    (folder / "rocket_copy.jpg").write_bytes((folder / "rocket.jpg").read_bytes())
    conn = sqlite3.connect(path_db)
    conn.executemany("insert into photos (title, path) values (?, ?)",
                     [("rocket_q40", "img/rocket_q40.jpg"), ("rocket_copy", "img/rocket_copy.jpg")])
    conn.commit()
    conn.close()
    index(path_db, "path")
    return path_db


def titles(db):
    return query_dict(db, "select id, title from photos")


@pytest.mark.asyncio
async def test_verified_groups_page_csv_and_compare(dup_db):
    ds = make_datasette(dup_db)
    named = titles(dup_db)
    response = await ds.client.get("/photos/photos/-/duplicates.json")
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["verified"] is True and data["unverified"] == 0
    groups = [{named[m["pk"]]: m["kind"] for m in g["members"]} for g in data["groups"]]
    rocket = next(g for g in groups if "rocket" in g)
    assert set(rocket) == {"rocket", "rocket_copy", "rocket_q40"}
    assert set(rocket.values()) == {"best copy", "same picture"}
    chelsea = next(g for g in data["groups"] if named[g["members"][0]["pk"]] == "chelsea")
    crop = next(m for m in chelsea["members"] if named[m["pk"]] == "chelsea_crop")
    assert crop["kind"] == "crop" and crop["reason"].startswith("crop of")
    assert crop["image"] == "img/chelsea_crop.jpg"

    page = await ds.client.get("/photos/photos/-/duplicates")
    assert page.status_code == 200
    assert "crop of" in page.text and "Download review list" in page.text
    compare_url = next(m for m in chelsea["members"] if m["kind"] == "crop")["pk"]
    assert f"/photos/photos/-/compare/{chelsea['members'][0]['pk']}/{compare_url}" in page.text

    csv_response = await ds.client.get("/photos/photos/-/duplicates.csv")
    assert csv_response.status_code == 200
    assert csv_response.headers["content-type"].startswith("text/csv")
    assert "attachment" in csv_response.headers["content-disposition"]
    lines = csv_response.text.splitlines()
    assert lines[0].startswith("group,action,pk,kind,reason,best_copy,path")
    assert any(",duplicate," in line and "img/chelsea_crop.jpg" in line for line in lines)

    best = chelsea["members"][0]["pk"]
    compared = await ds.client.get(f"/photos/photos/-/compare/{best}/{crop['pk']}.json")
    assert compared.status_code == 200, compared.text
    facts = {row["fact"]: (row["a"], row["b"]) for row in compared.json()["differences"]}
    assert compared.json()["verdict"]["kind"] == "crop" and "dimensions" in facts
    html = await ds.client.get(f"/photos/photos/-/compare/{best}/{crop['pk']}")
    assert html.status_code == 200 and "crop of" in html.text and "-/image/" in html.text


@pytest.mark.asyncio
async def test_duplicates_json_and_page_by_distance(dup_db):
    ds = make_datasette(dup_db)
    named = titles(dup_db)
    response = await ds.client.get("/photos/photos/-/duplicates.json?method=phash&verify=0")
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["method"] == "phash" and data["threshold"] == 10 and data["page"] == 1
    groups = [{named[m["pk"]]: m["kind"] for m in g["members"]} for g in data["groups"]]
    assert {"rocket": "best copy", "rocket_copy": "exact copy", "rocket_q40": "edited copy"} in groups
    member = data["groups"][0]["members"][0]
    assert member["thumbnail_url"].startswith("/photos/photos/-/thumbnail/")
    assert {"pk", "distance", "size", "width", "height", "image", "row_url"} <= set(member)

    none = (await ds.client.get("/photos/photos/-/duplicates.json?method=phash&threshold=0&verify=0")).json()
    assert none["threshold"] == 0
    assert all(m["distance"] == 0 for g in none["groups"] for m in g["members"])

    page = await ds.client.get("/photos/photos/-/duplicates?method=phash&verify=0")
    assert page.status_code == 200
    assert "exact copy" in page.text and "edited copy" in page.text and "-/thumbnail/" in page.text
    assert 'name="threshold"' in page.text

    bad = await ds.client.get("/photos/photos/-/duplicates.json?threshold=lots")
    assert bad.status_code == 400
    missing = await ds.client.get("/photos/photos/-/duplicates.json?method=cnn")
    assert missing.status_code == 404


@pytest.mark.asyncio
async def test_duplicates_respect_permissions(dup_db):
    ds = make_datasette(dup_db, private_table=True)
    for url in ["/photos/photos/-/duplicates", "/photos/photos/-/duplicates.json",
                "/photos/photos/-/duplicates.csv", "/photos/photos/-/compare/1/2",
                "/photos/photos/-/compare/1/2.json"]:
        response = await ds.client.get(url)
        assert response.status_code == 403 and "distance" not in response.text
    cookies = {"ds_actor": actor_cookie(ds, {"id": "root"})}
    response = await ds.client.get("/photos/photos/-/duplicates.json", cookies=cookies)
    assert response.status_code == 200 and response.headers["cache-control"].startswith("private")
