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


def test_default_index_goes_to_a_sidecar_and_drop_removes_it(path_db):
    import hashlib

    before = hashlib.sha256(path_db.read_bytes()).hexdigest()
    result = run("index", path_db, "--table", "photos", "--column", "path", "--method", "phash",
                 "--method", "histogram", "--workers", "1")
    assert result.exit_code == 0, result.output
    sidecar = path_db.with_name("photos-imgsim.db")
    assert sidecar.exists() and hashlib.sha256(path_db.read_bytes()).hexdigest() == before
    assert json.loads(run("status", path_db, "--json").output)[0]["roots"] == [str(path_db.parent)]
    result = run("drop", path_db, "--table", "photos", "--method", "histogram")
    assert result.exit_code == 0 and "dropped 1 index" in result.output
    assert [s["method"] for s in json.loads(run("status", path_db, "--json").output)] == ["phash"]
    assert run("drop", path_db, "--table", "nope").exit_code == 1
    assert run("drop", path_db).exit_code == 0
    import sqlite3

    left = [n for (n,) in sqlite3.connect(sidecar).execute("select name from sqlite_master")]
    assert not [n for n in left if n.startswith("_imgsim_")], left
    assert hashlib.sha256(path_db.read_bytes()).hexdigest() == before


def test_roots_outside_the_database_folder_are_derived_and_editable(tmp_path, photos):
    import sqlite3

    pictures = tmp_path / "home" / "Pictures"
    (pictures / "2021").mkdir(parents=True)
    (pictures / "2021" / "coffee.jpg").write_bytes(jpeg_bytes(photos["coffee"]))
    data = tmp_path / "app" / "data"
    data.mkdir(parents=True)
    db = data / "photo.db"
    conn = sqlite3.connect(db)
    conn.execute("create table photos (id integer primary key, filename text)")
    conn.execute("insert into photos (filename) values (?)", (str(pictures / "2021" / "coffee.jpg"),))
    conn.commit()
    conn.close()
    result = run("index", db, "--table", "photos", "--column", "filename", "--method", "phash",
                 "--workers", "1")
    assert result.exit_code == 0 and f"images may be served from: {pictures / '2021'}" in result.output
    assert run("roots", db, "--table", "photos").output.split() == [str(data), str(pictures / "2021")]
    assert run("roots", db, "--table", "photos", "--add", pictures).exit_code == 0
    assert str(pictures) in run("roots", db, "--table", "photos").output
    for bad, message in [(tmp_path / "nope", "root folder not found"), ("/", "any file")]:
        result = run("roots", db, "--table", "photos", "--add", bad)
        assert result.exit_code == 1 and message in result.output
    assert run("roots", db, "--table", "photos", "--remove", pictures).exit_code == 0
    assert str(pictures) + "\n" not in run("roots", db, "--table", "photos").output + "\n"
    # A new --root is recorded without a rebuild.
    result = run("index", db, "--table", "photos", "--column", "filename", "--method", "phash",
                 "--workers", "1", "--root", tmp_path)
    assert "0 indexed, 1 unchanged" in result.output and "rebuilding" not in result.output


def test_index_a_query_with_a_name(path_db):
    sql = "select id as photo_id, 'img/' || substr(path, 5) as file, title from photos where id <= 4"
    result = run("index", path_db, "--sql", sql, "--name", "first_four", "--pk", "photo_id",
                 "--column", "file", "--method", "phash", "--workers", "1")
    assert result.exit_code == 0 and "4 indexed" in result.output, result.output
    (status,) = json.loads(run("status", path_db, "--json").output)
    assert status["table"] == "first_four"
    for args, message in [(["--sql", sql, "--pk", "photo_id", "--column", "file"], "needs a name"),
                          (["--sql", sql, "--name", "x", "--pk", "nope", "--column", "file"], "no column 'nope'"),
                          (["--sql", "delete from photos", "--name", "x", "--pk", "id", "--column", "path"],
                           "single SELECT"),
                          (["--sql", "select * from nope", "--name", "x", "--pk", "id", "--column", "path"],
                           "does not run")]:
        result = run("index", path_db, *args, "--method", "phash")
        assert result.exit_code == 1 and message in result.output, result.output


def test_a_locked_database_answers_at_once_and_leaves_no_sidecar(path_db):
    import subprocess
    import sys
    import time

    # Another process, as Lightroom is: it opens its catalogue with locking_mode=EXCLUSIVE
    # (file locks are per process, so a connection in this one would not block it).
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sqlite3, sys, time\n"
        f"conn = sqlite3.connect({str(path_db)!r})\n"
        "conn.execute('pragma locking_mode = exclusive')\n"
        "conn.execute(\"insert into photos (title, path) values ('x', 'y')\")\n"
        "conn.commit()\n"
        "print('locked', flush=True)\n"
        "time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        result = run("index", path_db, "--table", "photos", "--column", "path", "--method", "phash")
        assert time.monotonic() - started < 15
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == 1 and "locked by another program" in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not path_db.with_name("photos-imgsim.db").exists()


def test_a_run_says_how_many_rows_still_fail(path_db):
    import sqlite3

    conn = sqlite3.connect(path_db)
    conn.execute("insert into photos (title, path) values ('gone', 'img/gone.jpg')")
    conn.commit()
    conn.close()
    args = ["index", path_db, "--table", "photos", "--column", "path", "--method", "phash", "--workers", "1"]
    assert "1 failed" in run(*args).output
    again = run(*args).output
    assert "0 failed" in again and "1 rows have errors" in again
    errors = run("status", path_db, "--errors").output
    assert "file not found" in errors and "gone.jpg" in errors


def test_apps_lists_the_presets():
    output = run("apps").output
    for name in ["digikam", "shotwell", "darktable", "lightroom", "dogsheep", "generic"]:
        assert name in output


def test_no_table_and_no_app_says_what_to_do(tmp_path):
    import sqlite3

    db = tmp_path / "other.db"
    sqlite3.connect(db).execute("create table notes (id integer primary key, body text)")
    result = run("index", db)
    assert result.exit_code == 1 and "no photo table recognised" in result.output
    assert not (tmp_path / "other-imgsim.db").exists()
