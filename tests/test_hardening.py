"""Hardening (issue 18): a crashing worker, bad keys, concurrent runs, a full disk, too many
workers, re-ranking outside the roots, and the server's killable decode workers."""
import os
import sqlite3
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner
from datasette.cli import cli

from datasette_imgsim.errors import ImageError
from datasette_imgsim.hookspecs import hookimpl
from datasette_imgsim.methods import Features, Method
from datasette_imgsim.plugins import pm

from .helpers import jpeg_bytes


def index(*args):
    return CliRunner().invoke(cli, ["imgsim", "index", *map(str, args)])


# --- A worker that dies costs only its image --------------------------------------------

def crash_on_red(images):
    for img in images:
        if img[0, 0, 0] > 200 and img[0, 0, 1] < 50 and img[0, 0, 2] < 50:
            os._exit(3)  # as the OOM killer or a segfaulting decoder would end it
    return Features(np.stack([img.reshape(-1, 3).mean(axis=0) for img in images]).astype(np.float32))


class CrashPlugin:
    @hookimpl
    def register_imgsim_methods(self):
        return [Method(name="crashy", dims=3, element_type="float", metric="l2",
                       extract=crash_on_red, min_size=16, batch_size=4)]


@pytest.fixture
def crash_plugin():
    instance = CrashPlugin()
    pm.register(instance, name="test-crashy")
    yield instance
    pm.unregister(name="test-crashy")


def test_a_worker_that_dies_costs_only_its_image(tmp_path, crash_plugin):
    from datasette_imgsim import ImageIndex
    from datasette_imgsim.indexer import CRASHED

    db = tmp_path / "crash.db"
    conn = sqlite3.connect(db)
    conn.execute("create table photos (id integer primary key, image blob)")
    rng = np.random.default_rng(1)
    for n in range(24):
        pixels = rng.integers(0, 120, (40, 40, 3), dtype=np.uint8)
        if n == 13:
            pixels[:] = (255, 0, 0)
        conn.execute("insert into photos values (?, ?)", (n + 1, jpeg_bytes(pixels, quality=95)))
    conn.commit()
    conn.close()
    with ImageIndex.open(db, write=True, in_place=True) as images:
        summary = images.build("photos", "image", methods=["crashy"], workers=2)
        assert (summary.indexed, summary.failed) == (23, 1), summary
        assert summary.errors == [(14, CRASHED)]


# --- Keys are checked before anything is written ----------------------------------------

@pytest.mark.parametrize("values, message", [
    ([("a", "x.jpg"), ("b", "y.jpg"), ("a", "z.jpg")], "--pk 'name' is not unique in 'files': 'a' is the key of 2 rows"),
    ([("a", "x.jpg"), (None, "y.jpg"), (None, "z.jpg")], "--pk 'name' is NULL in 2 rows of 'files'"),
])
def test_bad_keys_are_refused_before_anything_is_written(tmp_path, values, message):
    db = tmp_path / "keys.db"
    conn = sqlite3.connect(db)
    conn.execute("create table files (name text, image text)")
    conn.executemany("insert into files values (?, ?)", values)
    conn.commit()
    conn.close()
    result = index(db, "--table", "files", "--column", "image", "--pk", "name", "--method", "phash")
    assert result.exit_code == 1
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "keys-imgsim.db").exists()
    # A view's key, and a query's, are checked the same way.
    sqlite3.connect(db).execute("create view v as select * from files")
    result = index(db, "--table", "v", "--column", "image", "--pk", "name", "--method", "phash")
    assert result.exit_code == 1 and message.split(" in ")[0].replace("files", "v") in result.output


# --- One-line messages ------------------------------------------------------------------

def test_a_full_disk_is_one_line(path_db, monkeypatch):
    from datasette_imgsim.store import Store

    def full(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Store, "write", full)
    result = index(path_db, "--table", "photos", "--column", "path", "--method", "phash",
                   "--workers", "1")
    assert result.exit_code == 1
    assert "the disk is full" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) <= 2, result.output  # the progress bar, the message


def test_workers_are_capped(path_db):
    result = index(path_db, "--table", "photos", "--column", "path", "--method", "phash",
                   "--workers", "1000")
    assert result.exit_code == 0, result.output
    assert "--workers 1000: using" in result.output
    from datasette_imgsim.indexer import worker_cap

    assert worker_cap(1000) == min(2 * os.cpu_count(), 32) and worker_cap(1) == 1


def test_a_second_run_waits_for_the_first(path_db):
    """While one run holds the index (here: this test), another says who holds it and
    waits, then finishes normally."""
    from datasette_imgsim import ImageIndex

    command = [sys.executable, "-m", "datasette", "imgsim", "index", str(path_db), "--table",
               "photos", "--column", "path", "--method", "phash", "--workers", "1", "--in-place"]
    with ImageIndex.open(path_db, write=True, in_place=True) as first:
        first.lock_for_writing()
        second = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = second.stderr.readline()
        assert f"another index run (process {os.getpid()}) is writing to" in line, line
        assert "waiting for it to finish" in line
        time.sleep(0.5)
        assert second.poll() is None  # still waiting
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err[-2000:]
    assert "9 indexed, 0 unchanged, 0 removed, 0 failed" in out, out


def test_lock_without_waiting_names_the_holder(path_db):
    from datasette_imgsim import ImageIndex
    from datasette_imgsim.errors import SourceLocked

    with ImageIndex.open(path_db, write=True, in_place=True) as first:
        first.lock_for_writing()
        with ImageIndex.open(path_db, write=True, in_place=True) as second:
            with pytest.raises(SourceLocked, match=f"process {os.getpid()}"):
                second.lock_for_writing(wait=False)


# --- Re-ranking reads only allowed, regular files ---------------------------------------

def test_rerank_reads_no_file_outside_the_roots(path_db, tmp_path, photos):
    from datasette_imgsim import ImageIndex
    from datasette_imgsim.rerank import row_image

    outside = tmp_path.parent / f"{tmp_path.name}-outside.jpg"
    outside.write_bytes(jpeg_bytes(photos["coffee"]))
    fifo = tmp_path / "img" / "fifo.jpg"
    os.mkfifo(fifo)
    result = index(path_db, "--table", "photos", "--column", "path", "--method", "phash",
                   "--workers", "1", "--in-place")
    assert result.exit_code == 0, result.output
    conn = sqlite3.connect(path_db)
    conn.execute("update photos set path = ? where id = 1", (str(outside),))
    conn.execute("update photos set path = 'img/fifo.jpg' where id = 2")
    conn.commit()
    with ImageIndex.open(path_db) as images:
        spec = images.index("photos", "phash")
        with pytest.raises(ImageError, match="outside"):
            row_image(images.store, spec, 1)
        # A FIFO under the root is refused, not opened (it would block a SQL thread).
        started = time.monotonic()
        with pytest.raises(ImageError, match="regular file"):
            source = row_image(images.store, spec, 2)
            from datasette_imgsim.images import load_image

            load_image(source, 64)
        assert time.monotonic() - started < 2
        results = images.similar_to_row("photos", 3, k=8, rerank="geometric")
        assert all(r.pk not in (1, 2) or not r.inliers for r in results)
    # `search` reads its query image through the same function: no device, no FIFO.
    for query in ("/dev/zero", str(fifo)):
        started = time.monotonic()
        result = CliRunner().invoke(cli, ["imgsim", "search", str(path_db), query, "--table", "photos"])
        assert result.exit_code == 1 and "regular file" in result.output, result.output
        assert time.monotonic() - started < 5


def test_index_files_are_warmed_at_startup(path_db):
    from datasette.app import Datasette

    from datasette_imgsim import server

    index(path_db, "--table", "photos", "--column", "path", "--method", "phash", "--workers", "1")
    ds = Datasette([str(path_db)])
    files = server.index_files(ds)
    assert files == [str(path_db.parent / "photos-imgsim.db")]
    assert server.warm(files) == os.path.getsize(files[0])


# --- The server's decodes run in killable worker processes ------------------------------

@pytest.fixture
def decode_workers():
    from datasette_imgsim import decoding

    assert decoding.enable(workers=2)
    yield decoding
    decoding.disable()


def test_decodes_are_bounded_and_killable(decode_workers):
    from PIL import Image

    from datasette_imgsim import images
    from .test_hostile import encode, float_tiff_bomb, scan_bomb

    good = encode(Image.new("RGB", (800, 600), (10, 20, 30)), "JPEG")
    assert images.load_image(good, 64).shape == (75, 100, 3)
    with pytest.raises(ImageError, match="scan"):
        images.load_image(scan_bomb(1000, 200), 64)
    # A decode past its time is stopped: its worker is killed, the next decode works.
    # (The bomb takes ~0.2 s to decode here: the limits below leave it 4x that.)
    bomb = float_tiff_bomb(6000)
    started = time.monotonic()
    with pytest.raises(ImageError, match="longer than"):
        decode_workers.decode_sync(bomb, 64, seconds=0.05)
    assert time.monotonic() - started < 1.5
    assert images.open_image(good, 64).size == (100, 75)
    # A caller that gives up (an abandoned upload) stops the decode at once.
    cancelled = threading.Event()
    threading.Timer(0.05, cancelled.set).start()
    started = time.monotonic()
    with pytest.raises(ImageError, match="abandoned"):
        decode_workers.decode_sync(bomb, 64, cancelled=cancelled)
    assert time.monotonic() - started < 1.5
    pids = [w.process.pid for w in decode_workers._all]
    decode_workers.shutdown()
    time.sleep(0.3)
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split(") ")[1][0] == "Z"


@pytest.mark.asyncio
async def test_an_abandoned_upload_stops_its_decode(decode_workers):
    import asyncio

    from datasette_imgsim.decoding import decode
    from .test_hostile import float_tiff_bomb

    class GoneClient:
        async def receive(self):
            await asyncio.sleep(0.2)
            return {"type": "http.disconnect"}

    bomb = float_tiff_bomb(6000)
    started = time.monotonic()
    with pytest.raises(ImageError, match="abandoned"):
        await decode(bomb, 64, GoneClient())
    assert time.monotonic() - started < 1.5


def test_the_server_under_upload_bombs(tmp_path):
    """bench/bombs.py, briefly: 8 clients upload bombs to a real server while unrelated
    requests are timed; the server's memory (all its processes, from /proc) stays bounded,
    the scan bomb is refused, and SIGTERM stops it promptly, leaving nothing behind."""
    import json
    from pathlib import Path

    bench = Path(__file__).resolve().parent.parent / "bench" / "bombs.py"
    result = subprocess.run([sys.executable, str(bench), "--seconds", "6", "--json"],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    print(found)
    assert found["probes"] > 10
    assert found["worst_latency_s"] < 2.0, found
    assert found["server_peak_rss_mb"] < 1500, found
    assert found["sigterm_exit_s"] is not None and found["sigterm_exit_s"] < 10, found
    assert found["left_running_rss_mb"] == 0, found
    assert found["uploads"].get("scan.jpg 400"), found
    assert "scan" in found["refusals"]["scan.jpg"]


def test_a_huge_multipart_body_is_refused_before_parsing():
    from datasette_imgsim.errors import UploadError
    from datasette_imgsim.web.upload import parse_multipart

    part = b'--XyZ\r\nContent-Disposition: form-data; name="f"\r\n\r\nv\r\n'
    body = part * 300_000 + b"--XyZ--\r\n"
    started = time.monotonic()
    with pytest.raises(UploadError, match="more than"):
        parse_multipart(body, "multipart/form-data; boundary=XyZ")
    assert time.monotonic() - started < 0.5
    ok = (b'--XyZ\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\nDATA\r\n'
          + part + b"--XyZ--\r\n")
    assert parse_multipart(ok, "multipart/form-data; boundary=XyZ") == {
        "image": ("a.jpg", b"DATA"), "f": (None, b"v")}


@pytest.mark.asyncio
async def test_a_failed_sql_call_logs_one_line(tmp_path, capsys):
    from datasette.app import Datasette

    db = tmp_path / "plain.db"
    sqlite3.connect(db).execute("create table t (id integer primary key)")
    ds = Datasette([str(db)])
    await ds.invoke_startup()
    path = "/plain/-/query.json" if hasattr(ds, "allowed") else "/plain.json"
    response = await ds.client.get(path + "?sql=select+similar_images('t',+1)")
    assert response.status_code == 400
    err = capsys.readouterr().err
    assert "datasette-imgsim: SQL function error: table 't' has no image index" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("case", ["not-sqlite", "index-db-not-sqlite", "no-index-db-folder"])
def test_environment_failures_are_one_line(tmp_path, path_db, case):
    args = [path_db, "--table", "photos", "--column", "path", "--method", "phash"]
    if case == "not-sqlite":
        bad = tmp_path / "notes.db"
        bad.write_text("not a database\n" * 100)
        args[0], expected = bad, "is not a SQLite database"
    elif case == "index-db-not-sqlite":
        (tmp_path / "junk-imgsim.db").write_text("junk\n" * 100)
        args += ["--index-db", tmp_path / "junk-imgsim.db"]
        expected = "not a database"
    else:
        args += ["--index-db", tmp_path / "nowhere" / "x-imgsim.db"]
        expected = "folder for the index database not found"
    result = index(*args)
    assert result.exit_code == 1 and expected in result.output, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
