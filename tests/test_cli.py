"""search and status: what a user reads in the terminal."""
import json

from click.testing import CliRunner
from datasette.cli import cli

from .helpers import jpeg_bytes


def run(*args):
    return CliRunner().invoke(cli, ["imgsim", *map(str, args)])


def test_search_status_after_indexing(path_db, tmp_path, photos):
    assert run("index", path_db, "--table", "photos", "--column", "path", "--method", "phash",
               "--method", "histogram", "--workers", "1").exit_code == 0
    query = tmp_path / "query.jpg"
    query.write_bytes(jpeg_bytes(photos["coffee"], quality=60))
    result = run("search", path_db, query, "--table", "photos", "--method", "phash", "-k", "2")
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0].split("\t")
    assert first[2] == "img/coffee.jpg" and float(first[1]) <= 4
    data = json.loads(run("search", path_db, query, "--table", "photos", "--json").output)
    assert data["method"] == "phash"  # the first index built is the default
    assert data["results"][0]["image"] == "img/coffee.jpg"
    status = run("status", path_db).output
    assert "phash" in status and "histogram" in status and "indexed" in status


def test_search_errors(path_db, tmp_path):
    not_image = tmp_path / "x.jpg"
    not_image.write_text("hello")
    result = run("search", path_db, not_image, "--table", "photos")
    assert result.exit_code == 1 and "has no image index" in result.output
    run("index", path_db, "--table", "photos", "--column", "path", "--method", "phash", "--workers", "1")
    result = run("search", path_db, not_image, "--table", "photos")
    assert result.exit_code == 1 and "not a recognised image format" in result.output
    result = run("search", path_db, tmp_path / "missing.jpg", "--table", "photos")
    assert result.exit_code == 1 and "file not found" in result.output


def test_status_empty_database(tmp_path):
    import sqlite3

    sqlite3.connect(tmp_path / "e.db").execute("create table t (x)")
    assert "No image indexes" in run("status", tmp_path / "e.db").output
