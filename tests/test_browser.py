"""A real browser (headless Chromium through Playwright) walks table → photo → similar → upload.

Needs /usr/bin/chromium (Debian's chromium package; tests/run.sh installs it) or
IMGSIM_CHROMIUM pointing at a Chromium binary. IMGSIM_SCREENSHOT=path saves the similar page.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import urllib.request
import pytest

from .helpers import index_photos, jpeg_bytes

CHROMIUM = os.environ.get("IMGSIM_CHROMIUM", "/usr/bin/chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(path_db):
    index_photos(path_db, "phash", "histogram")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "datasette", "serve", str(path_db), "--host", "127.0.0.1",
         "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
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
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def images_rendered(page, selector: str) -> list[int]:
    page.wait_for_function(
        "s => Array.from(document.querySelectorAll(s)).every(i => i.complete)", arg=selector)
    return page.eval_on_selector_all(selector, "imgs => imgs.map(i => i.naturalWidth)")


def test_table_to_similar_to_upload(server, photos, tmp_path):
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), f"no Chromium at {CHROMIUM}: apt-get install chromium"
    query = tmp_path / "my cat.jpg"
    query.write_bytes(jpeg_bytes(photos["chelsea"][::2, ::2], quality=60))  # not in the table
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))

            # Table page: the image column is a thumbnail that links to its similar page.
            page.goto(server + "/photos/photos")
            assert all(w > 0 for w in images_rendered(page, "a.imgsim-cell img"))
            page.click("a.imgsim-cell:has(img[alt='img/chelsea.jpg'])")
            page.wait_for_selector(".imgsim-grid")
            assert "/photos/photos/-/similar/" in page.url
            assert "Images similar to chelsea" in page.inner_text("h1")

            widths = images_rendered(page, ".imgsim-grid img, img.imgsim-query-image")
            assert len(widths) == 9 and all(w > 0 for w in widths), widths
            if os.environ.get("IMGSIM_SCREENSHOT"):
                page.screenshot(path=os.environ["IMGSIM_SCREENSHOT"], full_page=True)

            # A neighbour's own "similar" link keeps exploring.
            first = page.locator(".imgsim-result").first
            neighbour = first.get_attribute("data-pk")
            first.locator("a.imgsim-similar-link").click()
            page.wait_for_url(f"**/-/similar/{neighbour}*")
            assert all(w > 0 for w in images_rendered(page, ".imgsim-grid img"))

            # Method switch, then the upload search from the page's own link.
            page.click(".imgsim-methods a:has-text('histogram')")
            page.wait_for_url("**method=histogram*")
            page.click("text=Search by uploading an image")
            page.wait_for_selector("#imgsim-upload-form")
            page.set_input_files("#imgsim-image", str(query))
            page.select_option("select[name=method]", "phash")
            page.click("input[type=submit][value='Find similar images']")
            page.wait_for_selector(".imgsim-grid")
            assert page.locator(".imgsim-result .imgsim-caption").first.inner_text() == "1. chelsea"
            widths = images_rendered(page, ".imgsim-grid img, #imgsim-uploaded")
            assert all(w > 0 for w in widths), widths
            assert errors == []
        finally:
            browser.close()
