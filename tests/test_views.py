"""Pages, JSON and thumbnails through datasette.client, on Datasette 0.65 and 1.0a."""
from __future__ import annotations

import io
import os
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from datasette import __version__ as datasette_version
from datasette.cli import cli
from datasette_test import Datasette, actor_cookie
from packaging.version import parse
from PIL import Image

from datasette_imgsim.errors import UploadError
from datasette_imgsim.web.upload import parse_multipart

from .helpers import heic_bytes, index_photos, jpeg_bytes, make_datasette

IS_1_0 = parse(datasette_version) >= parse("1.0a0")


def index(db: Path, column: str, *extra: str) -> None:
    index_photos(db, "phash", "histogram", column=column, extra=extra)


@pytest.fixture
def outside(tmp_path_factory) -> Path:
    """An image outside the indexed root, which thumbnails must never serve."""
    folder = tmp_path_factory.mktemp("outside")
    secret = folder / "secret.jpg"
    secret.write_bytes(jpeg_bytes(__import__("numpy").full((40, 40, 3), 200, "uint8")))
    return secret


@pytest.fixture
def indexed_db(path_db, photos, outside) -> Path:
    index(path_db, "path")
    root = path_db.parent
    # Rows added after indexing: the thumbnail route reads them from the table itself.
    (root / "img" / "link.jpg").symlink_to(outside)
    relative_out = os.path.relpath(outside, root)
    conn = sqlite3.connect(path_db)
    conn.executemany("insert into photos (title, path) values (?, ?)", [
        ("dotdot", relative_out), ("absolute", str(outside)), ("symlink", "img/link.jpg"),
        ("missing", "img/missing.jpg"), ("notimage", "img/notes.jpg"),
    ])
    conn.commit()
    conn.close()
    (root / "img" / "notes.jpg").write_text("not a picture")
    return path_db


@pytest.fixture
def ds(indexed_db):
    return make_datasette(indexed_db)


def ids_by_title(db: Path) -> dict:
    conn = sqlite3.connect(db)
    try:
        return {title: id for id, title in conn.execute("select id, title from photos")}
    finally:
        conn.close()


# --- GET /db/table/-/similar/pk ----------------------------------------------------------

@pytest.mark.asyncio
async def test_similar_json_shape(ds, indexed_db):
    ids = ids_by_title(indexed_db)
    response = await ds.client.get(f"/photos/photos/-/similar/{ids['chelsea']}.json?k=4")
    assert response.status_code == 200
    data = response.json()
    assert set(data) == {"database", "table", "method", "metric", "query", "results"}
    assert (data["database"], data["table"], data["method"], data["metric"]) == (
        "photos", "photos", "phash", "hamming")
    assert data["query"] == {"pk": ids["chelsea"]}
    results = data["results"]
    assert len(results) == 4
    assert ids["chelsea"] not in [r["pk"] for r in results]
    distances = [r["distance"] for r in results]
    assert distances == sorted(distances)
    first = results[0]
    assert set(first) == {"pk", "distance", "thumbnail_url", "image_url", "row_url", "row"}
    assert first["row_url"] == f"/photos/photos/{first['pk']}"
    assert first["row"]["id"] == first["pk"] and first["row"]["path"].startswith("img/")
    for url in (first["thumbnail_url"], first["row_url"]):
        assert (await ds.client.get(url)).status_code == 200


@pytest.mark.asyncio
async def test_similar_method_switch_and_errors(ds, indexed_db):
    ids = ids_by_title(indexed_db)
    base = f"/photos/photos/-/similar/{ids['chelsea']}"
    data = (await ds.client.get(base + ".json?method=histogram&k=2")).json()
    assert (data["method"], data["metric"], len(data["results"])) == ("histogram", "cosine", 2)
    # The crop of chelsea is her nearest neighbour by colour.
    assert data["results"][0]["pk"] == ids["chelsea_crop"]
    response = await ds.client.get(base + ".json?method=cnn")
    assert response.status_code == 404
    assert "has no 'cnn' index" in response.json()["error"]
    response = await ds.client.get(base + ".json?k=zero")
    assert response.status_code == 400 and "k must be" in response.json()["error"]
    response = await ds.client.get("/photos/photos/-/similar/9999.json")
    assert response.status_code == 404 and "9999" in response.json()["error"]
    assert (await ds.client.get("/photos/nope/-/similar/1.json")).status_code == 404
    assert (await ds.client.get("/nope/photos/-/similar/1.json")).status_code == 404
    assert (await ds.client.get("/photos/photos/-/similar/9999")).status_code == 404


@pytest.mark.asyncio
async def test_similar_html_page(ds, indexed_db):
    ids = ids_by_title(indexed_db)
    response = await ds.client.get(f"/photos/photos/-/similar/{ids['chelsea']}?k=3")
    assert response.status_code == 200
    html = response.text
    assert "Images similar to chelsea" in html
    assert "app.css" in html  # Datasette's base template
    assert f'src="/photos/photos/-/thumbnail/{ids["chelsea"]}?size=768' in html
    assert html.count('class="imgsim-result"') == 3
    assert f'href="/photos/photos/-/similar/{ids["coffee"]}?k=3"' in html or "imgsim-similar-link" in html
    assert 'href="/photos/photos/-/similar/%d?method=histogram&amp;k=3"' % ids["chelsea"] in html
    assert f'href="/photos/photos/-/similar/{ids["chelsea"]}.json?k=3"' in html


@pytest.mark.asyncio
async def test_blob_table_text_keys(blob_db):
    index(blob_db, "image")
    ds = Datasette([str(blob_db)])
    data = (await ds.client.get("/blobs/photos/-/similar/chelsea.json?k=3")).json()
    assert data["query"] == {"pk": "chelsea"}
    for result in data["results"]:
        # Image bytes never reach the JSON: a short description stands in.
        assert result["row"]["image"]["$blob"] is True and result["row"]["image"]["bytes"] > 1000
        assert result["row_url"] == f"/blobs/photos/{result['pk']}"
    thumb = await ds.client.get("/blobs/photos/-/thumbnail/chelsea?size=50")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(thumb.content)).size) == 50


@pytest.mark.asyncio
async def test_view_rows_link_to_a_filter(path_db):
    conn = sqlite3.connect(path_db)
    conn.execute("create view photo_view as select id as photo_id, title, path from photos")
    conn.close()
    result = CliRunner().invoke(cli, ["imgsim", "index", str(path_db), "--table", "photo_view",
                                      "--column", "path", "--pk", "photo_id",
                                      "--method", "phash", "--workers", "1", "--in-place"])
    assert result.exit_code == 0, result.output
    ds = Datasette([str(path_db)])
    data = (await ds.client.get("/photos/photo_view/-/similar/1.json?k=1")).json()
    assert data["results"][0]["row_url"].startswith("/photos/photo_view?photo_id=")
    assert (await ds.client.get("/photos/photo_view/-/thumbnail/1")).status_code == 200


# --- GET /db/table/-/thumbnail/pk --------------------------------------------------------

@pytest.mark.asyncio
async def test_thumbnail_size_etag_and_format(ds, indexed_db):
    ids = ids_by_title(indexed_db)
    url = f"/photos/photos/-/thumbnail/{ids['chelsea']}?size=64"
    response = await ds.client.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(response.content)).size) == 64
    etag = response.headers["etag"]
    assert "max-age" in response.headers["cache-control"]
    again = await ds.client.get(url, headers={"if-none-match": etag})
    assert again.status_code == 304 and again.content == b""
    webp = await ds.client.get(url + "&format=webp")
    assert webp.headers["content-type"] == "image/webp"
    assert Image.open(io.BytesIO(webp.content)).format == "WEBP"
    assert webp.headers["etag"] != etag


@pytest.mark.asyncio
async def test_thumbnail_is_exif_rotated(path_db, photos):
    img = Image.fromarray(photos["coffee"])  # landscape, 600x400
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90° on display
    out = io.BytesIO()
    img.save(out, "JPEG", exif=exif)
    (path_db.parent / "img" / "rotated.jpg").write_bytes(out.getvalue())
    conn = sqlite3.connect(path_db)
    conn.execute("insert into photos (id, title, path) values (100, 'rotated', 'img/rotated.jpg')")
    conn.commit()
    conn.close()
    index(path_db, "path")
    ds = Datasette([str(path_db)])
    response = await ds.client.get("/photos/photos/-/thumbnail/100?size=120")
    width, height = Image.open(io.BytesIO(response.content)).size
    assert (width, height) == (80, 120)


@pytest.mark.asyncio
@pytest.mark.parametrize("title", ["dotdot", "absolute"])
async def test_thumbnail_never_reads_outside_root(ds, indexed_db, title):
    ids = ids_by_title(indexed_db)
    response = await ds.client.get(f"/photos/photos/-/thumbnail/{ids[title]}")
    assert response.status_code == 403
    assert "outside the indexed root" in response.text
    assert not response.headers["content-type"].startswith("image/")


@pytest.mark.asyncio
async def test_thumbnail_follows_a_symlink_inside_the_root(ds, indexed_db):
    """A link the library's owner put inside the root (a folder on another disk) is served."""
    ids = ids_by_title(indexed_db)
    response = await ds.client.get(f"/photos/photos/-/thumbnail/{ids['symlink']}")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"


@pytest.mark.asyncio
async def test_thumbnail_missing_and_bad(ds, indexed_db):
    ids = ids_by_title(indexed_db)
    missing = await ds.client.get(f"/photos/photos/-/thumbnail/{ids['missing']}")
    assert missing.status_code == 404 and "image file not found" in missing.text
    notimage = await ds.client.get(f"/photos/photos/-/thumbnail/{ids['notimage']}")
    assert notimage.status_code == 422 and "not a recognised image format" in notimage.text
    for pk in ["9999", "..~2F..~2Fetc~2Fpasswd", "~2Fetc~2Fpasswd", "%2E%2E"]:
        response = await ds.client.get(f"/photos/photos/-/thumbnail/{pk}")
        assert response.status_code == 404, pk
    assert (await ds.client.get("/photos/photos/-/thumbnail/../../etc/passwd")).status_code == 404


# --- GET/POST /db/table/-/similar --------------------------------------------------------

@pytest.mark.asyncio
async def test_upload_form_page(ds):
    response = await ds.client.get("/photos/photos/-/similar")
    assert response.status_code == 200
    html = response.text
    assert 'enctype="multipart/form-data"' in html and 'name="image"' in html
    assert html.index('name="csrftoken"') < html.index('name="image"')
    assert '<option value="histogram"' in html
    get_json = await ds.client.get("/photos/photos/-/similar.json")
    assert get_json.status_code == 405 and "POST an image" in get_json.json()["error"]


@pytest.mark.asyncio
async def test_upload_finds_an_image_not_in_the_database(ds, indexed_db, photos):
    ids = ids_by_title(indexed_db)
    # A re-encode of chelsea at another quality and size: not a file in the table.
    pixels = photos["chelsea"][::2, ::2]
    query = jpeg_bytes(pixels, quality=60)
    response = await ds.client.post("/photos/photos/-/similar.json",
                                    files={"image": ("cat.jpg", query, "image/jpeg")},
                                    data={"k": "3"})
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["query"] == {"upload": True}
    assert data["results"][0]["pk"] == ids["chelsea"] and len(data["results"]) == 3
    assert set(data["results"][0]) == {"pk", "distance", "thumbnail_url", "image_url", "row_url", "row"}
    raw = await ds.client.post("/photos/photos/-/similar.json?method=histogram&k=2", content=query,
                               headers={"content-type": "image/jpeg"})
    assert raw.status_code == 200
    assert raw.json()["method"] == "histogram"
    assert raw.json()["results"][0]["pk"] in (ids["chelsea"], ids["chelsea_crop"])
    html = await ds.client.post("/photos/photos/-/similar",
                                files={"image": ("cat.jpg", query, "image/jpeg")},
                                data={"method": "phash"})
    assert html.status_code == 200
    assert 'src="data:image/jpeg;base64,' in html.text
    assert html.text.index(f'data-pk="{ids["chelsea"]}"') < html.text.index('data-pk="', html.text.index(f'data-pk="{ids["chelsea"]}"') + 1)


@pytest.mark.asyncio
async def test_upload_of_an_iphone_heic_photo(ds, indexed_db, photos):
    ids = ids_by_title(indexed_db)
    response = await ds.client.post("/photos/photos/-/similar.json",
                                    files={"image": ("IMG_0042.HEIC", heic_bytes(photos["chelsea"]), "image/heic")},
                                    data={"k": "1", "method": "phash"})
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["pk"] == ids["chelsea"]


@pytest.mark.asyncio
async def test_upload_too_large_corrupt_or_missing(indexed_db, photos):
    ds = make_datasette(indexed_db, plugin_config={"max_upload_bytes": 5000})
    big = jpeg_bytes(photos["chelsea"])
    assert len(big) > 5000
    response = await ds.client.post("/photos/photos/-/similar.json",
                                    files={"image": ("big.jpg", big, "image/jpeg")})
    assert response.status_code == 413
    assert "upload too large: the limit is 4.9 KB" in response.json()["error"]
    raw = await ds.client.post("/photos/photos/-/similar.json", content=big,
                               headers={"content-type": "image/jpeg"})
    assert raw.status_code == 413
    page = await ds.client.post("/photos/photos/-/similar",
                                files={"image": ("big.jpg", big, "image/jpeg")})
    assert page.status_code == 413 and "upload too large" in page.text and 'name="image"' in page.text
    for bad in [b"GIF89a broken", big[:400]]:
        corrupt = await ds.client.post("/photos/photos/-/similar.json",
                                       files={"image": ("x.jpg", bad, "image/jpeg")})
        assert corrupt.status_code == 400
        assert "not an image we can read" in corrupt.json()["error"]
    empty = await ds.client.post("/photos/photos/-/similar.json", data={"k": "3"},
                                 files={"other": ("x.txt", b"hi", "text/plain")})
    assert empty.status_code == 400 and "no image uploaded" in empty.json()["error"]


def test_parse_multipart():
    body = (b"--XyZ\r\nContent-Disposition: form-data; name=\"k\"\r\n\r\n5\r\n"
            b"--XyZ\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a b.jpg\"\r\n"
            b"Content-Type: image/jpeg\r\n\r\n\x00--XyZ\xff\r\n\r\n--XyZ--\r\n")
    parts = parse_multipart(body, "multipart/form-data; boundary=XyZ")
    assert parts == {"k": (None, b"5"), "image": ("a b.jpg", b"\x00--XyZ\xff\r\n")}
    with pytest.raises(UploadError):
        parse_multipart(b"nothing", "multipart/form-data")
    with pytest.raises(UploadError):
        parse_multipart(b"--b\r\nno blank line--b--", "multipart/form-data; boundary=b")


# --- permissions and CSRF ----------------------------------------------------------------

@pytest.mark.asyncio
async def test_denied_table_leaks_nothing(indexed_db, photos):
    ds = make_datasette(indexed_db, private_table=True)
    ids = ids_by_title(indexed_db)
    pk = ids["chelsea"]
    upload = {"image": ("cat.jpg", jpeg_bytes(photos["chelsea"]), "image/jpeg")}
    requests = [
        ("get", f"/photos/photos/-/similar/{pk}", {}),
        ("get", f"/photos/photos/-/similar/{pk}.json", {}),
        ("get", f"/photos/photos/-/similar/{pk}.json?method=histogram", {}),
        ("get", f"/photos/photos/-/thumbnail/{pk}", {}),
        ("get", "/photos/photos/-/similar", {}),
        ("post", "/photos/photos/-/similar.json", {"files": upload}),
        ("post", "/photos/photos/-/similar", {"files": upload}),
    ]
    for verb, url, kwargs in requests:
        response = await getattr(ds.client, verb)(url, **kwargs)
        assert response.status_code == 403, url
        assert "distance" not in response.text and "thumbnail_url" not in response.text
        assert not response.headers["content-type"].startswith("image/")
    cookies = {"ds_actor": actor_cookie(ds, {"id": "root"})}
    token, cookies = await csrf_token(ds, cookies)
    for verb, url, kwargs in requests:
        if verb == "post":
            kwargs = dict(kwargs, data={"csrftoken": token})
        response = await getattr(ds.client, verb)(url, cookies=cookies, **kwargs)
        assert response.status_code == 200, url
    private = await ds.client.get(f"/photos/photos/-/thumbnail/{pk}", cookies=cookies)
    assert private.headers["cache-control"].startswith("private")


async def csrf_token(ds, cookies: dict) -> tuple[str, dict]:
    """The upload form's csrftoken and the cookies to send with it (0.65's asgi-csrf pair)."""
    form = await ds.client.get("/photos/photos/-/similar", cookies=cookies)
    token = form.text.split('name="csrftoken" value="')[1].split('"')[0]
    if "ds_csrftoken" in form.cookies:
        cookies = dict(cookies, ds_csrftoken=form.cookies["ds_csrftoken"])
    return token, cookies


@pytest.mark.asyncio
async def test_posts_follow_datasettes_csrf_protection(ds, photos):
    upload = {"image": ("cat.jpg", jpeg_bytes(photos["chelsea"]), "image/jpeg")}
    if IS_1_0:
        # 1.0a: a cross-site browser POST is refused, a same-origin one allowed.
        bad = await ds.client.post("/photos/photos/-/similar", files=upload,
                                   headers={"sec-fetch-site": "cross-site"})
        assert bad.status_code == 403
        good = await ds.client.post("/photos/photos/-/similar", files=upload,
                                    headers={"sec-fetch-site": "same-origin"})
        assert good.status_code == 200
        return
    # 0.65: asgi-csrf wants the form's csrftoken, before the file, matching the cookie.
    token, cookies = await csrf_token(ds, {})
    for data in ({}, {"csrftoken": "forged"}):
        bad = await ds.client.post("/photos/photos/-/similar", files=upload, data=data,
                                   cookies=cookies)
        assert bad.status_code == 403 and "CSRF" in bad.text
        bad_json = await ds.client.post("/photos/photos/-/similar.json", files=upload, data=data,
                                        cookies=cookies)
        assert bad_json.status_code == 403 and "results" not in bad_json.json()
    forged_cookie = {"ds_csrftoken": "forged"}
    bad = await ds.client.post("/photos/photos/-/similar", files=upload,
                               data={"csrftoken": "forged"}, cookies=forged_cookie)
    assert bad.status_code == 403
    # Raw bytes with cookies: asgi-csrf itself refuses the unknown content type.
    raw = await ds.client.post("/photos/photos/-/similar.json", content=b"x", cookies=cookies,
                               headers={"content-type": "image/jpeg"})
    assert raw.status_code == 403
    good = await ds.client.post("/photos/photos/-/similar", files=upload, data={"csrftoken": token},
                                cookies=cookies)
    assert good.status_code == 200 and "imgsim-result" in good.text


# --- entry points on Datasette's pages ---------------------------------------------------

@pytest.mark.asyncio
async def test_table_page_cells_and_action(ds, indexed_db):
    ids = ids_by_title(indexed_db)
    html = (await ds.client.get("/photos/photos")).text
    assert f'href="/photos/photos/-/similar/{ids["chelsea"]}"' in html
    assert f'src="/photos/photos/-/thumbnail/{ids["chelsea"]}?size=96"' in html
    assert 'href="/photos/photos/-/similar"' in html and "Search by image" in html
    row = (await ds.client.get(f"/photos/photos/{ids['chelsea']}")).text
    # 1.0a: the row actions menu; 0.65 (no row_actions): the image cell's own link.
    assert f'href="/photos/photos/-/similar/{ids["chelsea"]}"' in row
    if IS_1_0:
        assert "Find similar images" in row


@pytest.mark.asyncio
async def test_unindexed_tables_are_left_alone(ds, indexed_db):
    conn = sqlite3.connect(indexed_db)
    conn.execute("create table other (id integer primary key, path text)")
    conn.execute("insert into other values (1, 'img/chelsea.jpg')")
    conn.commit()
    conn.close()
    html = (await ds.client.get("/photos/other")).text
    assert "/-/similar" not in html and "/-/thumbnail" not in html
    response = await ds.client.get("/photos/other/-/similar")
    assert response.status_code == 404 and "has no image index" in response.text
    assert (await ds.client.get("/photos/other/-/similar/1.json")).status_code == 404
    assert (await ds.client.get("/photos/other/-/thumbnail/1")).status_code == 404


# --- packaging ---------------------------------------------------------------------------

RENDER_FROM_WHEEL = """
import asyncio, sys
import datasette_imgsim
from datasette.app import Datasette
assert datasette_imgsim.__file__.startswith(sys.argv[1]), datasette_imgsim.__file__

async def main():
    ds = Datasette([sys.argv[2]])
    for url in ["/photos/photos/-/similar/1", "/photos/photos/-/similar"]:
        response = await ds.client.get(url)
        assert response.status_code == 200, (url, response.text[-500:])
        assert "imgsim-" in response.text
    print("rendered from", datasette_imgsim.__file__)

asyncio.run(main())
"""


def test_installed_wheel_renders_pages(tmp_path, indexed_db):
    """The templates travel inside the wheel: pages render from an installed, non-editable copy."""
    import subprocess
    import sys
    import zipfile

    project = Path(__file__).resolve().parent.parent
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
                            "-w", str(tmp_path / "dist"), str(project)],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("datasette_imgsim-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "datasette_imgsim/templates/imgsim_similar.html" in names
    assert "datasette_imgsim/templates/imgsim_upload.html" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    ran = subprocess.run([sys.executable, "-c", RENDER_FROM_WHEEL, str(site), str(indexed_db)],
                         capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(site)})
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert f"rendered from {site}" in ran.stdout


@pytest.mark.asyncio
async def test_geometric_rerank_on_the_pages(ds, indexed_db, photos):
    ids = ids_by_title(indexed_db)
    response = await ds.client.get(f"/photos/photos/-/similar/{ids['chelsea']}.json?k=3&rerank=geometric")
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    # The crop of chelsea shares many SIFT matches with it; unrelated photos share few.
    assert results[0]["pk"] == ids["chelsea_crop"] and results[0]["inliers"] >= 12
    assert all("inliers" in r for r in results)
    page = await ds.client.get(f"/photos/photos/-/similar/{ids['chelsea']}?rerank=geometric")
    assert "matched features" in page.text and 'name="rerank" value="geometric" checked' in page.text
    crop = jpeg_bytes(photos["coffee"][100:300, 150:450])
    upload = await ds.client.post("/photos/photos/-/similar.json?rerank=geometric&k=2", content=crop,
                                  headers={"content-type": "image/jpeg"})
    assert upload.status_code == 200 and upload.json()["results"][0]["pk"] == ids["coffee"]
    bad = await ds.client.get(f"/photos/photos/-/similar/{ids['chelsea']}.json?rerank=magic")
    assert bad.status_code == 400
