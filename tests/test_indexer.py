"""The pipeline through the CLI command a user runs: paths, BLOBs, views, increments, errors, kills."""
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from datasette.cli import cli

from datasette_imgsim.store import Store, connect
from datasette_imgsim.store.connection import SQLITE_ERRORS

from .helpers import heic_bytes, jpeg_bytes, process_group, row_ids


def index(*args):
    result = CliRunner().invoke(cli, ["imgsim", "index", *map(str, args), "--in-place"],
                                catch_exceptions=False)
    return result


def nearest(db, table, pk, method, k=3):
    from datasette_imgsim.search import similar_to_row

    _, results = similar_to_row(Store(connect(str(db))), table, pk, k, method)
    return [r["pk"] for r in results]


def test_path_table_index_and_query(path_db):
    result = index(path_db, "--table", "photos", "--column", "path",
                   "--method", "histogram", "--method", "phash", "--method", "hog", "--workers", "2")
    assert result.exit_code == 0, result.output
    assert "9 indexed, 0 unchanged, 0 removed, 0 failed" in result.output
    chelsea = row_ids(path_db, "select id from photos where title = 'chelsea'")[0]
    crop = row_ids(path_db, "select id from photos where title = 'chelsea_crop'")[0]
    for method in ["histogram", "phash", "hog"]:
        assert nearest(path_db, "photos", chelsea, method)[0] == crop, method


def test_blob_table_with_text_keys(blob_db, photos):
    assert index(blob_db, "--table", "photos", "--column", "image", "--method", "phash").exit_code == 0
    conn = sqlite3.connect(blob_db)
    conn.execute("insert into photos values ('chelsea_small', ?)",
                 (jpeg_bytes(photos["chelsea"][::2, ::2], quality=70),))
    conn.commit()
    result = index(blob_db, "--table", "photos", "--column", "image", "--method", "phash")
    assert "1 indexed, 8 unchanged" in result.output
    assert nearest(blob_db, "photos", "chelsea", "phash", 1) == ["chelsea_small"]


def test_heic_photos_are_indexed_with_the_rest(path_db, photo_dir, photos):
    """A phone library: the same cat once as JPEG and once as the iPhone's HEIC."""
    (photo_dir / "IMG_0001.HEIC").write_bytes(heic_bytes(photos["chelsea"]))
    (photo_dir / "IMG_0002.heic").write_bytes(heic_bytes(photos["coffee"]))
    conn = sqlite3.connect(path_db)
    conn.executemany("insert into photos (title, path) values (?, ?)",
                     [("chelsea_heic", "img/IMG_0001.HEIC"), ("coffee_heic", "img/IMG_0002.heic")])
    conn.commit()
    result = index(path_db, "--table", "photos", "--column", "path", "--method", "phash",
                   "--method", "histogram", "--workers", "2")
    assert "11 indexed, 0 unchanged, 0 removed, 0 failed" in result.output, result.output
    ids = {t: row_ids(path_db, "select id from photos where title = ?", (t,))[0]
           for t in ("chelsea", "chelsea_heic", "coffee", "coffee_heic")}
    for method in ("phash", "histogram"):
        assert nearest(path_db, "photos", ids["coffee_heic"], method)[0] == ids["coffee"], method
        assert nearest(path_db, "photos", ids["chelsea_heic"], method)[0] == ids["chelsea"], method


def test_incremental_changes_and_deletions(path_db, photo_dir, photos):
    index(path_db, "--table", "photos", "--column", "path", "--method", "phash")
    # Replace a file's content (new size and mtime), delete a row, blank a row's path.
    (photo_dir / "coins.jpg").write_bytes(jpeg_bytes(photos["chelsea"]))
    os.utime(photo_dir / "coins.jpg", ns=(time.time_ns(), time.time_ns() + 10**9))
    conn = sqlite3.connect(path_db)
    conn.execute("delete from photos where title = 'rocket'")
    conn.execute("update photos set path = null where title = 'retina'")
    conn.commit()
    result = index(path_db, "--table", "photos", "--column", "path", "--method", "phash")
    assert "1 indexed, 6 unchanged, 2 removed, 0 failed, 1 without image" in result.output
    coins = row_ids(path_db, "select id from photos where title = 'coins'")[0]
    chelsea = row_ids(path_db, "select id from photos where title = 'chelsea'")[0]
    assert nearest(path_db, "photos", chelsea, "phash", 1) == [coins]
    assert Store(connect(str(path_db))).counts(Store(connect(str(path_db))).index("photos")) == {
        "indexed": 7, "errors": 0}


def test_bad_files_are_recorded_and_the_run_continues(path_db, photo_dir, photos):
    (photo_dir / "truncated.jpg").write_bytes(jpeg_bytes(photos["coffee"])[:3000])
    (photo_dir / "notes.jpg").write_text("shopping list")
    (photo_dir / "empty.jpg").write_bytes(b"")
    conn = sqlite3.connect(path_db)
    for name in ["truncated.jpg", "notes.jpg", "empty.jpg", "gone.jpg"]:
        conn.execute("insert into photos (title, path) values (?, ?)", (name, f"img/{name}"))
    conn.commit()
    result = index(path_db, "--table", "photos", "--column", "path", "--method", "histogram")
    assert result.exit_code == 0
    assert "9 indexed, 0 unchanged, 0 removed, 4 failed" in result.output
    errors = dict(sqlite3.connect(path_db).execute(
        "select p.title, e.error from _imgsim_errors e join photos p on p.id = e.pk"))
    assert "truncated" in errors["truncated.jpg"]
    assert errors["notes.jpg"] == "not a recognised image format"
    assert "empty" in errors["empty.jpg"]
    assert errors["gone.jpg"].startswith("file not found")
    # Unchanged failures are not retried; a fixed file is.
    (photo_dir / "notes.jpg").write_bytes(jpeg_bytes(photos["rocket"]))
    result = index(path_db, "--table", "photos", "--column", "path", "--method", "histogram")
    assert "1 indexed, 12 unchanged" in result.output


def test_view_with_pk_over_split_paths(tmp_path, photo_dir):
    db = tmp_path / "app.db"
    conn = sqlite3.connect(db)
    conn.executescript("""
        create table albums (id integer primary key, root text);
        create table images (uuid text primary key, album_id integer, name text);
        create view photo_files as
            select images.uuid, albums.root || '/' || images.name as path
            from images join albums on albums.id = images.album_id;
    """)
    conn.execute("insert into albums values (1, ?)", (str(photo_dir),))
    for file in sorted(photo_dir.iterdir()):
        conn.execute("insert into images values (?, 1, ?)", (f"uuid-{file.stem}", file.name))
    conn.commit()
    result = index(db, "--table", "photo_files", "--column", "path", "--method", "phash")
    assert result.exit_code == 1 and "is a view" in result.output and "--pk" in result.output
    result = index(db, "--table", "photo_files", "--column", "path", "--pk", "uuid", "--method", "phash")
    assert "9 indexed" in result.output
    assert nearest(db, "photo_files", "uuid-chelsea", "phash", 1) == ["uuid-chelsea_crop"]


@pytest.mark.parametrize("args, message", [
    (["--table", "nope", "--column", "path"], "no table or view named 'nope'; tables: photos"),
    (["--table", "photos", "--column", "nope"], "table 'photos' has no column 'nope'"),
    (["--table", "photos", "--column", "path", "--method", "magic"], "unknown method 'magic'"),
    (["--table", "photos", "--column", "path", "--pk", "x"], "has no column 'x' to use as --pk"),
])
def test_bad_names_get_one_line_errors(path_db, args, message):
    result = index(path_db, *args)
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_missing_database_file(tmp_path):
    result = index(tmp_path / "nope.db", "--table", "t", "--column", "c")
    assert result.exit_code == 1 and "database file not found" in result.output


def test_killed_run_resumes_consistently(tmp_path, photos):
    """kill -9 in the middle of a run leaves a consistent index; the next run finishes it."""
    db = tmp_path / "many.db"
    conn = sqlite3.connect(db)
    conn.execute("create table photos (id integer primary key, image blob)")
    base = list(photos.values())
    for n in range(1500):
        pixels = base[n % len(base)]
        conn.execute("insert into photos (image) values (?)", (jpeg_bytes(pixels[n % 7:, n % 5:], quality=60 + n % 30),))
    conn.commit()
    conn.close()
    command = [sys.executable, "-m", "datasette", "imgsim", "index", str(db), "--table", "photos",
               "--column", "image", "--method", "hog", "--method", "histogram", "--workers", "2",
               "--in-place"]
    # Its own process group: every process of the run (workers, forkserver, resource
    # tracker) is found by it after the kill.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True)
    deadline = time.time() + 60
    done = 0
    while time.time() < deadline and done < 40:
        time.sleep(0.01)
        try:
            done = sqlite3.connect(db).execute("select count(*) from _imgsim_items").fetchone()[0]
        except sqlite3.OperationalError:
            pass
    helpers = group_members(process.pid) - {process.pid}
    assert helpers, "the run had started no worker processes"
    process.send_signal(signal.SIGKILL)
    process.wait()
    # Nothing of the run outlives it: workers and forkserver exit within seconds.
    deadline = time.time() + 10
    while group_members(process.pid) and time.time() < deadline:
        time.sleep(0.2)
    left = {pid: _cmdline(pid) for pid in group_members(process.pid)}
    assert not left, f"processes of the killed run still running: {left}"
    store = Store(connect(str(db)))
    partial = {spec.method: store.counts(spec)["indexed"] for spec in store.indexes("photos")}
    assert 0 < min(partial.values()) and max(partial.values()) < 1500, partial
    for spec in store.indexes("photos"):
        vectors = store.conn.execute(f"select count(*) from {spec.vec_table}").fetchone()[0]
        assert vectors == store.counts(spec)["indexed"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "unchanged, 0 removed, 0 failed" in result.stdout
    assert int(result.stdout.split(" indexed")[0]) == 1500 - min(partial.values())
    # Read through the connection held open across the second run, as a server would.
    # (Once, on a loaded machine, it said "database disk image is malformed" here: the
    # file's own check below tells a stale connection from a damaged file.)
    try:
        specs = store.indexes("photos")
    except SQLITE_ERRORS as e:
        check = Store(connect(str(db))).conn.execute("pragma integrity_check").fetchall()
        raise AssertionError(f"held connection: {e}; the file's integrity_check: {check}") from e
    for spec in specs:
        assert store.counts(spec) == {"indexed": 1500, "errors": 0}


def group_members(pgid: int) -> set:
    """Live (not zombie) processes in process group pgid, from /proc."""
    return set(process_group(pgid))


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")[:200]
    except OSError:
        return "?"


def _pid():
    return os.getpid()


@pytest.mark.parametrize("skip", [False, True])
def test_workers_started_by_the_cli_skip_its_main_script(tmp_path, monkeypatch, skip):
    """multiprocessing re-runs the parent's __main__ script in each worker; for
    `datasette imgsim index` that is Datasette's console script (the whole app)."""
    import contextlib
    import multiprocessing
    import types
    from concurrent.futures import ProcessPoolExecutor

    from datasette_imgsim.indexer import workers_skip_main_script

    marker = tmp_path / "main-ran"
    script = tmp_path / "console_script.py"
    script.write_text(f"open({str(marker)!r}, 'a').write('ran')\n")
    fake_main = types.ModuleType("__main__")
    fake_main.__file__, fake_main.__spec__ = str(script), None
    monkeypatch.setitem(sys.modules, "__main__", fake_main)
    context = multiprocessing.get_context("forkserver")
    with workers_skip_main_script() if skip else contextlib.nullcontext():
        with ProcessPoolExecutor(1, mp_context=context) as pool:
            assert pool.submit(_pid).result() != os.getpid()
    assert sys.modules["__main__"] is fake_main
    assert marker.exists() is not skip
