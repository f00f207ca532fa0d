"""Screenshots of every page on the demo for the README: docs/{page}-{line}-{desktop,phone}.png.

    .venv-0.65/bin/python tests/docs_screenshots.py     # one Datasette line per run
    .venv-1.0a/bin/python tests/docs_screenshots.py

Serves demo.db with demo/datasette.yaml plus `image_column_first: true`, drives headless
Chromium (/usr/bin/chromium, or IMGSIM_CHROMIUM) at 1400x900 and 400x900, and keeps each
PNG under 150 KB (desktop shots scaled to 75 %, colours quantised). Not a test: pytest does
not collect it.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml
from datasette import __version__ as datasette_version
from PIL import Image

ROOT = Path(__file__).parent.parent
CHROMIUM = os.environ.get("IMGSIM_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
LIMIT = 150 * 1024
PAGES = [("table", "/demo/photos?_sort=id"), ("gallery", "/demo/photos/-/gallery"),
         ("lightbox", "/demo/photos/-/gallery"), ("similar", "/demo/photos/-/similar/11"),
         ("row", "/demo/photos/11"), ("upload", "/demo/photos/-/similar"),
         ("duplicates", "/demo/photos/-/duplicates"), ("compare", "/demo/photos/-/compare/49/54"),
         ("database", "/demo")]


def shrink(path: Path, desktop: bool) -> None:
    original = Image.open(path).convert("RGB")
    for scale in ((0.75, 0.65, 0.55) if desktop else (1.0, 0.9, 0.8)):
        size = (int(original.width * scale), int(original.height * scale))
        im = original if scale == 1 else original.resize(size, Image.LANCZOS)
        for colors in (256, 128, 96, 64):
            im.quantize(colors=colors, dither=Image.Dither.NONE).save(path, optimize=True)
            if path.stat().st_size <= LIMIT:
                return


def serve(config: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    is_1_0 = datasette_version.startswith("1.")
    args = [sys.executable, "-m", "datasette", "serve", str(ROOT / "demo.db"), "-p", str(port),
            "-m", str(config)] + (["-c", str(config)] if is_1_0 else [])
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(150):
        try:
            urllib.request.urlopen(url + "/-/versions.json", timeout=2).read()
            return process, url
        except OSError:
            time.sleep(0.2)
    process.terminate()
    raise SystemExit("datasette did not start")


def main() -> None:
    from playwright.sync_api import sync_playwright

    line = "1.0a" if datasette_version.startswith("1.") else "0.65"
    work = Path(tempfile.mkdtemp())
    settings = yaml.safe_load((ROOT / "demo" / "datasette.yaml").read_text())
    settings.setdefault("plugins", {})["datasette-imgsim"] = {"image_column_first": True}
    config = work / "datasette.yaml"
    config.write_text(yaml.safe_dump(settings))
    import sqlite3
    import io

    data = sqlite3.connect(ROOT / "demo.db").execute(
        "select image from photos where id = 11").fetchone()[0]
    query = work / "query.jpg"  # a crop: an image the library does not hold
    im = Image.open(io.BytesIO(data))
    im.crop((40, 30, im.width - 60, im.height - 20)).save(query, quality=70)
    process, url = serve(config)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            for width in (1400, 400):
                page = browser.new_page(viewport={"width": width, "height": 900})
                for name, path in PAGES:
                    page.goto(url + path)
                    page.wait_for_load_state("networkidle")
                    if name == "table":
                        page.evaluate("window.scrollTo(0, document.querySelector("
                                      "'table.rows-and-columns').getBoundingClientRect().top"
                                      " + scrollY - 110)")
                    if name == "lightbox":
                        page.locator("a.imgsim-thumb").nth(10).click()
                        page.wait_for_function(
                            "() => document.getElementById('imgsim-lb-image').complete")
                    if name == "row":
                        page.wait_for_selector("#imgsim-strip img")
                        page.locator("#imgsim-strip").scroll_into_view_if_needed()
                    if name == "upload":
                        page.set_input_files("#imgsim-image", str(query))
                        page.click("input[type=submit][value='Find similar images']")
                        page.wait_for_selector("#imgsim-results .imgsim-grid")
                        page.wait_for_load_state("networkidle")
                    page.wait_for_timeout(300)
                    kind = "desktop" if width > 500 else "phone"
                    out = ROOT / "docs" / f"{name}-{line}-{kind}.png"
                    page.screenshot(path=str(out))
                    shrink(out, kind == "desktop")
                    print(out.relative_to(ROOT), out.stat().st_size)
            browser.close()
    finally:
        process.terminate()
        process.wait(timeout=10)


if __name__ == "__main__":
    main()
