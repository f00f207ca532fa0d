"""A real browser (headless Chromium through Playwright) walks what a person does: table page
→ gallery → lightbox → next → similar → the strip on a row page → upload by file input and by
drop; and checks what they see (first result above the fold on a desktop and a phone, the
full-size image in the lightbox, path text in table cells, no _imgsim_ tables listed).

Run it under each Datasette line (.venv-0.65 and .venv-1.0a). Needs /usr/bin/chromium
(Debian's chromium package; tests/run.sh installs it) or IMGSIM_CHROMIUM pointing at a
Chromium binary. IMGSIM_SCREENSHOTS=folder saves a PNG of each page at 1400 and 400 px.
"""
from __future__ import annotations

import base64
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request

import pytest
from datasette import __version__ as datasette_version
from packaging.version import parse
from PIL import Image

from .helpers import index_photos, jpeg_bytes, label_photos

CHROMIUM = os.environ.get("IMGSIM_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
IS_1_0 = parse(datasette_version) >= parse("1.0a0")
LINE = "1.0a" if IS_1_0 else "0.65"
SHOTS = os.environ.get("IMGSIM_SCREENSHOTS")
DESKTOP = {"width": 1400, "height": 900}
PHONE = {"width": 400, "height": 900}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def library(path_db, photo_dir, photos):
    """The photos table with a large photo (2400 px wide), dates, and a label on chelsea."""
    big = Image.fromarray(photos["astronaut"]).resize((2400, 2400))
    (photo_dir / "big.jpg").write_bytes(jpeg_bytes(__import__("numpy").asarray(big)))
    conn = sqlite3.connect(path_db)
    conn.execute("insert into photos (title, path) values ('big astronaut', 'img/big.jpg')")
    conn.execute("alter table photos add column taken_at text")
    conn.execute("update photos set taken_at = printf('%d-06-01', 2010 + id)")
    conn.commit()
    conn.close()
    index_photos(path_db, "phash", "histogram")
    label_photos(path_db, "title = 'chelsea'")
    conn = sqlite3.connect(path_db)
    ids = dict(conn.execute("select title, id from photos"))
    conn.close()
    return path_db, ids


@pytest.fixture
def server(library, tmp_path):
    db, ids = library
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"plugins": {"datasette-imgsim": {"image_column_first": True}}}))
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "datasette", "serve", str(db), "--host", "127.0.0.1",
         "--port", str(port), "-c" if IS_1_0 else "-m", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url + "/-/versions.json", timeout=5).read()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("datasette did not start: "
                                         + process.stdout.read().decode(errors="replace"))
                time.sleep(0.2)
        yield url, ids
    finally:
        process.terminate()
        process.wait(timeout=10)


def loaded(page, selector: str) -> list[int]:
    page.wait_for_function(
        "s => Array.from(document.querySelectorAll(s)).every(i => i.complete)", arg=selector)
    return page.eval_on_selector_all(selector, "imgs => imgs.map(i => i.naturalWidth)")


def shot(page, name: str) -> None:
    if SHOTS:
        os.makedirs(SHOTS, exist_ok=True)
        width = page.viewport_size["width"]
        page.screenshot(path=os.path.join(SHOTS, f"{name}-{LINE}-{width}.png"))


def above_fold(page, selector: str) -> None:
    box = page.locator(selector).first.bounding_box()
    assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= 900, box


def test_a_person_browses_their_photos(server, photos, tmp_path):
    from playwright.sync_api import sync_playwright

    url, ids = server
    assert os.path.exists(CHROMIUM), f"no Chromium at {CHROMIUM}: apt-get install chromium"
    query = tmp_path / "my cat.jpg"
    query.write_bytes(jpeg_bytes(photos["chelsea"][::2, ::2], quality=60))  # not in the table
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport=DESKTOP)
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))

            # Database page: the user's table, none of the plugin's own.
            page.goto(url + "/photos")
            listed = page.eval_on_selector_all("h3 a", "links => links.map(a => a.textContent)")
            assert "photos" in listed and not [t for t in listed if t.startswith("_imgsim_")]
            if page.locator("textarea#sql-editor").count():
                assert "_imgsim_" not in page.input_value("textarea#sql-editor")

            # Table page, filtered: the path text stays beside each thumbnail, the image
            # column comes first (config), and the gallery link keeps the filter.
            page.goto(url + "/photos/photos?taken_at__gte=2014-01-01&_sort_desc=taken_at")
            assert all(w > 0 for w in loaded(page, "a.imgsim-cell img"))
            assert "img/chelsea_crop.jpg" in page.locator(".imgsim-cell-text").all_inner_texts() or \
                "img/big.jpg" in page.locator(".imgsim-cell-text").all_inner_texts()
            headers = page.eval_on_selector_all("table.rows-and-columns thead th",
                                                "ths => ths.map(t => t.dataset.column)")
            assert headers.index("path") <= 1, headers
            shot(page, "table")
            page.set_viewport_size(PHONE)  # Datasette's phone layout labels cells by position
            label = page.evaluate("i => getComputedStyle(document.querySelector("
                                  "'table.rows-and-columns tbody tr').cells[i], '::before').content",
                                  headers.index("path"))
            assert label == '"path"', label
            page.set_viewport_size(DESKTOP)
            page.click("text=View these photos as a gallery")
            page.wait_for_selector(".imgsim-gallery")
            assert "/-/gallery" in page.url and "taken_at__gte=2014-01-01" in page.url
            shown = page.locator(".imgsim-gallery .imgsim-result")
            assert shown.count() == len([i for i in ids.values() if 2010 + i >= 2014])
            assert shown.first.locator(".imgsim-caption").inner_text() == "big astronaut"
            loaded(page, ".imgsim-gallery img")
            shot(page, "gallery")

            # Lightbox: the full-size image, caption and date; next with the arrow key; Esc.
            page.locator(".imgsim-gallery a.imgsim-thumb").first.click()
            page.wait_for_selector("#imgsim-lightbox[open]")
            page.wait_for_function("() => document.getElementById('imgsim-lb-image').complete "
                                   "&& document.getElementById('imgsim-lb-image').naturalWidth > 0")
            assert page.eval_on_selector("#imgsim-lb-image", "i => i.naturalWidth") > 1000
            assert page.inner_text("#imgsim-lb-caption") == "big astronaut"
            assert page.inner_text("#imgsim-lb-date").startswith("20")
            shot(page, "lightbox")
            page.keyboard.press("ArrowRight")
            page.wait_for_function("() => document.getElementById('imgsim-lb-caption')"
                                   ".textContent !== 'big astronaut'")
            second = page.inner_text("#imgsim-lb-caption")
            assert second == shown.nth(1).locator(".imgsim-caption").inner_text()
            page.keyboard.press("Escape")
            page.wait_for_selector("#imgsim-lightbox", state="hidden")

            # The lightbox's "similar" link: results first, readable similarity, chips.
            page.goto(url + f"/photos/photos/-/gallery?title=chelsea")
            page.locator("a.imgsim-thumb").first.click()
            page.wait_for_selector("#imgsim-lightbox[open]")
            page.click("#imgsim-lb-similar")
            page.wait_for_selector(".imgsim-grid")
            assert f"/-/similar/{ids['chelsea']}" in page.url
            assert "Images similar to chelsea" in page.inner_text("h1")
            loaded(page, ".imgsim-grid img, .imgsim-query img")
            above_fold(page, ".imgsim-result")
            labels = page.locator(".imgsim-result .imgsim-similarity").all_inner_texts()
            assert labels and set(labels) <= {"near-identical", "same scene", "related", "unrelated"}
            assert page.locator(".imgsim-result").first.locator(".imgsim-caption").inner_text() \
                == "1. chelsea_crop"
            assert page.locator(".imgsim-query .imgsim-chip").all_inner_texts() == ["tabby cat"]
            assert not page.locator(".imgsim-query details").get_attribute("open")
            shot(page, "similar")
            page.set_viewport_size(PHONE)
            page.reload()
            loaded(page, ".imgsim-grid img, .imgsim-query img")
            above_fold(page, ".imgsim-result")
            shot(page, "similar")
            page.set_viewport_size(DESKTOP)

            # Method switch keeps k and re-rank; a label chip opens the gallery of that label.
            page.goto(url + f"/photos/photos/-/similar/{ids['chelsea']}?k=5&rerank=geometric")
            switch = page.locator(".imgsim-methods a:has-text('histogram')").get_attribute("href")
            assert "k=5" in switch and "rerank=geometric" in switch
            page.click(".imgsim-query .imgsim-chip")
            page.wait_for_selector(".imgsim-gallery")
            assert page.locator(".imgsim-gallery .imgsim-caption").all_inner_texts() == ["chelsea"]

            # Row page: the strip of nearest images under the row, linking to the full page.
            page.goto(url + f"/photos/photos/{ids['chelsea']}")
            page.wait_for_selector("#imgsim-strip .imgsim-result")
            assert page.locator("#imgsim-strip .imgsim-result").count() == 8
            table = page.locator("table.rows-and-columns").first.bounding_box()
            strip = page.locator("#imgsim-strip").bounding_box()
            assert strip["y"] > table["y"]
            assert page.locator("#imgsim-strip a:has-text('All similar images')").count() == 1
            loaded(page, "#imgsim-strip img")
            shot(page, "row")

            # Upload by the file input: a preview first; a method switch without choosing again.
            page.goto(url + "/photos/photos/-/similar")
            assert "Up to 20 MB" in page.inner_text("#imgsim-drop")
            page.set_input_files("#imgsim-image", str(query))
            page.wait_for_selector("#imgsim-preview:not([hidden])")
            page.select_option("select[name=method]", "phash")
            page.click("input[type=submit][value='Find similar images']")
            page.wait_for_selector("#imgsim-results .imgsim-grid")
            assert page.locator(".imgsim-result .imgsim-caption").first.inner_text() == "1. chelsea"
            assert all(w > 0 for w in loaded(page, ".imgsim-grid img, #imgsim-uploaded"))
            shot(page, "upload")
            page.click(".imgsim-switch[data-method='histogram']")
            page.wait_for_selector(".imgsim-query-meta strong:has-text('histogram')")
            assert page.locator(".imgsim-result").count() > 0

            # Upload by drop: a file dropped anywhere on the page.
            page.goto(url + "/photos/photos/-/similar")
            payload = base64.b64encode(query.read_bytes()).decode()
            page.evaluate("""b64 => {
                const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
                const dt = new DataTransfer();
                dt.items.add(new File([bytes], "dropped.jpg", {type: "image/jpeg"}));
                document.getElementById("imgsim-drop").dispatchEvent(
                    new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true}));
            }""", payload)
            page.wait_for_selector("#imgsim-results .imgsim-grid")
            assert page.locator("#imgsim-preview").is_visible()
            assert page.locator(".imgsim-result").count() > 0

            # Upload by pasting an image from the clipboard.
            page.goto(url + "/photos/photos/-/similar")
            page.evaluate("""b64 => {
                const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
                const dt = new DataTransfer();
                dt.items.add(new File([bytes], "pasted.jpg", {type: "image/jpeg"}));
                document.dispatchEvent(new ClipboardEvent("paste", {clipboardData: dt,
                    bubbles: true, cancelable: true}));
            }""", payload)
            page.wait_for_selector("#imgsim-results .imgsim-grid")
            assert page.locator(".imgsim-result .imgsim-caption").first.inner_text() == "1. chelsea"
            assert errors == []
        finally:
            browser.close()
