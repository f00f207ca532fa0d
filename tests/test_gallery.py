"""The gallery, the full-size image route, the row strip, the table page's additions, readable
similarity and captions, through datasette.client on Datasette 0.65 and 1.0a."""
from __future__ import annotations

import io
import sqlite3
from types import SimpleNamespace

import numpy as np
import pytest
from datasette import __version__ as datasette_version
from datasette_test import actor_cookie
from packaging.version import parse
from PIL import Image

from datasette_imgsim.web.captions import Describer
from datasette_imgsim.web.similarity import annotate, level, thresholds
from datasette_imgsim.web.upload_page import human_size

from .helpers import index_photos, jpeg_bytes, label_photos, make_datasette

IS_1_0 = parse(datasette_version) >= parse("1.0a0")


@pytest.fixture
def library(path_db, photo_dir, photos):
    """photos with dates, a PNG and a TIFF, phash and histogram indexes, chelsea labelled."""
    Image.fromarray(photos["coffee"]).save(photo_dir / "coffee.png")
    Image.fromarray(photos["rocket"]).save(photo_dir / "rocket.tiff")
    conn = sqlite3.connect(path_db)
    conn.executemany("insert into photos (title, path) values (?, ?)",
                     [("coffee png", "img/coffee.png"), ("rocket tiff", "img/rocket.tiff")])
    conn.execute("alter table photos add column taken_at text")
    conn.execute("update photos set taken_at = printf('%d-06-01T10:30:00', 2010 + id)")
    conn.commit()
    conn.close()
    index_photos(path_db, "phash", "histogram")
    label_photos(path_db, "title like 'chelsea%'")
    conn = sqlite3.connect(path_db)
    ids = dict(conn.execute("select title, id from photos"))
    conn.close()
    return path_db, ids


def shown(html: str) -> list[str]:
    """The captions of a gallery page, in order."""
    import re

    return re.findall(r'<div class="imgsim-caption" title="[^"]*">([^<]*)</div>', html)


@pytest.mark.asyncio
async def test_gallery_follows_the_table_pages_filters_sort_and_paging(library):
    db, ids = library
    ds = make_datasette(db)
    page = await ds.client.get("/photos/photos/-/gallery")
    assert page.status_code == 200
    assert len(shown(page.text)) == len(ids) and 'loading="lazy"' in page.text
    assert "data-imgsim-lightbox" in page.text and 'id="imgsim-lightbox"' in page.text
    narrowed = await ds.client.get(
        "/photos/photos/-/gallery?taken_at__gte=2016-01-01&_sort_desc=taken_at&_facet=title")
    titles = [t for t, i in sorted(ids.items(), key=lambda x: -x[1]) if 2010 + i >= 2016]
    assert shown(narrowed.text) == titles
    assert "taken_at__gte=2016-01-01" in narrowed.text  # the filter is shown and kept
    assert "imgsim-facets" in narrowed.text
    # Dates read as dates; captions from the title column.
    assert "2016-06-01 10:30" in narrowed.text or "2017-06-01 10:30" in narrowed.text


@pytest.mark.asyncio
async def test_gallery_pages_with_datasettes_next_token(library, monkeypatch):
    from datasette_imgsim.web import gallery_page

    monkeypatch.setattr(gallery_page, "PER_PAGE", 4)
    db, ids = library
    ds = make_datasette(db)
    first = await ds.client.get("/photos/photos/-/gallery?_sort=title")
    assert shown(first.text) == sorted(ids)[:4]
    import html as htmllib
    import re

    next_url = htmllib.unescape(re.search(r'href="([^"]+)" rel="next"', first.text).group(1))
    assert "_sort=title" in next_url and "_next=" in next_url
    second = await ds.client.get(next_url)
    assert shown(second.text) == sorted(ids)[4:8]


@pytest.mark.asyncio
async def test_gallery_of_a_label(library):
    db, ids = library
    ds = make_datasette(db)
    page = await ds.client.get("/photos/photos/-/gallery?_imgsim_label=tabby+cat")
    assert sorted(shown(page.text)) == ["chelsea", "chelsea_crop"]
    assert "tabby cat" in page.text and "all labels" in page.text
    none = await ds.client.get("/photos/photos/-/gallery?_imgsim_label=dog")
    assert shown(none.text) == [] and "No photos" in none.text
    # Chips on the similar page link to it.
    similar = await ds.client.get(f"/photos/photos/-/similar/{ids['chelsea']}")
    assert 'class="imgsim-chip" href="/photos/photos/-/gallery?_imgsim_label=tabby+cat"' in similar.text


@pytest.mark.asyncio
async def test_gallery_and_image_respect_permissions(library):
    db, ids = library
    ds = make_datasette(db, private_table=True)
    for path in ("/photos/photos/-/gallery", f"/photos/photos/-/image/{ids['chelsea']}",
                 f"/photos/photos/-/strip/{ids['chelsea']}"):
        assert (await ds.client.get(path)).status_code == 403, path
    cookies = {"ds_actor": actor_cookie(ds, {"id": "root"})}
    page = await ds.client.get("/photos/photos/-/gallery", cookies=cookies)
    assert page.status_code == 200 and len(shown(page.text)) == len(ids)
    image = await ds.client.get(f"/photos/photos/-/image/{ids['chelsea']}", cookies=cookies)
    assert image.status_code == 200 and "private" in image.headers["cache-control"]


@pytest.mark.asyncio
async def test_full_size_image(library, photo_dir):
    db, ids = library
    ds = make_datasette(db)
    jpeg = await ds.client.get(f"/photos/photos/-/image/{ids['chelsea']}")
    assert jpeg.status_code == 200 and jpeg.headers["content-type"] == "image/jpeg"
    assert jpeg.content == (photo_dir / "chelsea.jpg").read_bytes()  # the original bytes
    assert jpeg.headers["content-disposition"].startswith('inline; filename="chelsea.jpg"')
    png = await ds.client.get(f"/photos/photos/-/image/{ids['coffee png']}")
    assert png.headers["content-type"] == "image/png"
    assert png.content == (photo_dir / "coffee.png").read_bytes()
    tiff = await ds.client.get(f"/photos/photos/-/image/{ids['rocket tiff']}")
    assert tiff.status_code == 200 and tiff.headers["content-type"] == "image/jpeg"
    assert 'filename="rocket.jpg"' in tiff.headers["content-disposition"]
    assert Image.open(io.BytesIO(tiff.content)).size == Image.open(photo_dir / "rocket.tiff").size
    again = await ds.client.get(f"/photos/photos/-/image/{ids['chelsea']}",
                                headers={"if-none-match": jpeg.headers["etag"]})
    assert again.status_code == 304
    assert (await ds.client.get("/photos/photos/-/image/999")).status_code == 404


@pytest.mark.asyncio
async def test_full_size_image_bounds_and_roots(library, tmp_path_factory):
    db, ids = library
    small = make_datasette(db, plugin_config={"max_image_bytes": 1000})
    refused = await small.client.get(f"/photos/photos/-/image/{ids['chelsea']}")
    assert refused.status_code == 413 and "image too large to serve" in refused.text
    outside = tmp_path_factory.mktemp("elsewhere") / "secret.jpg"
    outside.write_bytes(jpeg_bytes(np.full((40, 40, 3), 200, "uint8")))
    conn = sqlite3.connect(db)
    conn.execute("insert into photos (title, path) values ('secret', ?)", (str(outside),))
    conn.commit()
    secret = conn.execute("select id from photos where title = 'secret'").fetchone()[0]
    conn.close()
    response = await make_datasette(db).client.get(f"/photos/photos/-/image/{secret}")
    assert response.status_code == 403 and response.content != outside.read_bytes()


@pytest.mark.asyncio
async def test_row_strip_and_table_page_additions(library):
    db, ids = library
    ds = make_datasette(db, plugin_config={"image_column_first": True})
    strip = await ds.client.get(f"/photos/photos/-/strip/{ids['chelsea']}")
    assert strip.status_code == 200 and strip.text.count('class="imgsim-result"') == 8
    assert f"/photos/photos/-/similar/{ids['chelsea']}" in strip.text
    row = await ds.client.get(f"/photos/photos/{ids['chelsea']}")
    if IS_1_0:
        assert 'id="imgsim-strip"' in row.text  # top_row renders it
    else:
        assert f"/photos/photos/-/strip/{ids['chelsea']}" in row.text  # fetched by the script
    table = await ds.client.get("/photos/photos")
    assert "View these photos as a gallery" in table.text and '"first": true' in table.text
    assert 'class="imgsim-cell-text">img/chelsea.jpg' in table.text
    assert 'alt="chelsea"' in table.text  # alt text is the caption
    actions = await ds.client.get("/photos/photos")
    assert "/photos/photos/-/gallery" in actions.text


@pytest.mark.asyncio
async def test_internal_tables_hidden_and_default_sql(library):
    db, _ = library
    ds = make_datasette(db)
    page = await ds.client.get("/photos")
    assert page.status_code == 200
    import re

    listed = re.findall(r'<h3><a href="/photos/([^"]+)">', page.text)
    assert "photos" in listed and not [t for t in listed if t.startswith("_imgsim_")]
    assert "select * from _imgsim_" not in page.text
    home = await ds.client.get("/")
    # The one _imgsim_ name left is the store's _imgsim_errors view, listed with the views
    # on both lines (metadata can hide only tables).
    assert set(re.findall(r">(_imgsim_\w+)<", home.text)) <= {"_imgsim_errors"}


@pytest.mark.asyncio
async def test_similar_page_reads_as_words(library):
    db, ids = library
    ds = make_datasette(db)
    page = await ds.client.get(f"/photos/photos/-/similar/{ids['chelsea']}?method=phash&k=9")
    assert 'imgsim-sim-near-identical' in page.text and "imgsim-divider" in page.text
    assert 'title="hamming distance' in page.text
    assert "<details>" in page.text and "All columns of this row" in page.text


def test_similarity_bands():
    assert level("phash", 0) == "near-identical" and level("phash", 24) == "unrelated"
    assert level("phash", 12) == "same scene" and level("phash", 15) == "related"
    assert level("cnn", 0.5) == "unrelated" and level("cnn", 0.9, inliers=40) == "near-identical"
    near, scene, related = thresholds("some-plugin-method")
    assert near < scene < related
    items = annotate("phash", [{"distance": d} for d in (0, 12, 30, 31)])
    assert [i["divider"] for i in items] == [False, False, True, False]


def test_captions_and_dates():
    spec = SimpleNamespace(table="photos", column="path", pk="id", source={})
    describe = Describer(spec)
    assert describe.caption({"id": 2, "path": "a/2021/x.jpg", "album": "2021"}) == "x.jpg"
    assert describe.caption({"id": 2, "Title": "Beach", "path": "x.jpg"}) == "Beach"
    assert describe.caption({"id": 2, "path": None}, 2) == "photos 2"
    assert describe.date({"taken_at": "2021-06-03T10:20:30"}) == "2021-06-03 10:20"
    assert describe.date({"date": 1622715630}) == "2021-06-03 10:20"
    configured = Describer(spec, {"caption_column": "album", "date_column": "when"})
    assert configured.caption({"id": 1, "album": "Trip", "title": "t"}) == "Trip"
    assert configured.date({"when": "2020:01:02 03:04:05", "date": "1999-01-01"}) == "2020-01-02 03:04"
    preset = SimpleNamespace(table="Images", column="path", pk="id",
                             source={"caption_column": "caption", "date_column": "taken"})
    assert Describer(preset).caption({"id": 1, "caption": "Launch day", "name": "r.jpg"}) == "Launch day"


def test_human_sizes():
    assert human_size(20 * 1024 * 1024) == "20 MB"
    assert human_size(1536) == "1.5 KB" and human_size(512) == "512 bytes"


def test_app_preset_gallery_uses_the_presets_captions(tmp_path):
    import asyncio

    from click.testing import CliRunner
    from datasette.app import Datasette as Plain
    from datasette.cli import cli

    from .app_fixtures import digikam_db

    built = digikam_db(tmp_path)
    args = ["imgsim", "index", str(built.path), "--method", "phash", "--workers", "1"]
    for uuid, path in built.options["volumes"].items():
        args += ["--volume", f"{uuid}={path}"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output

    async def pages():
        ds = Plain([str(built.path)])
        base = ds.urls.table(built.path.stem, "Images")
        page = await ds.client.get(f"{base}/-/gallery")
        assert page.status_code == 200, page.text[:300]
        captions = shown(page.text)
        assert len(captions) == len(built.expected)  # hidden, trashed, videos left out
        assert "Launch day" in captions and "astronaut.jpg" in captions
        assert "2021-02-03 09:15" in page.text
        image = await ds.client.get(f"{base}/-/image/4")
        assert image.status_code == 200 and 'filename="rocket.jpg"' in image.headers["content-disposition"]

    asyncio.run(pages())
