import sqlite3

import pytest

from datasette_imgsim.errors import SourceError

from datasette_imgsim.apps import generic
from tests.app_fixtures import check_detection, check_indexed_and_served, check_photo_list, generic_db, read_only, run, small_jpeg

APP = generic.APP


def test_detects_generic_only(tmp_path):
    check_detection(APP, tmp_path)


def test_lists_the_single_path_table(tmp_path):
    built = generic_db(tmp_path)
    photos, rows = check_photo_list(APP, built)
    assert (photos.name, photos.key_column, photos.image_column) == ("Photos", "id", "FilePath")
    # Relative paths stay relative, and resolve against the database's folder.
    assert (built.path.parent / rows[1]["FilePath"]).is_file()


def _blob_db(path, declared="blob", column="image"):
    conn = sqlite3.connect(path)
    conn.execute(f"create table shots (name text primary key, {column} {declared}, note text)")
    conn.execute("insert into shots values ('astro', ?, 'a')", (small_jpeg("astronaut"),))
    conn.execute("insert into shots values ('empty', null, 'b')")
    conn.commit()
    conn.close()
    return path


@pytest.mark.parametrize("declared, column", [("blob", "image"), ("", "content"), ("blob", "raw")])
def test_blob_table_by_name_or_magic_bytes(tmp_path, declared, column):
    db = _blob_db(tmp_path / "blobs.db", declared, column)
    conn = read_only(db)
    assert APP.detect(conn)
    photos = APP.photo_list(conn, {})
    conn.close()
    assert (photos.key_column, photos.image_column, photos.roots) == ("name", column, ())
    (row,) = run(db, photos.sql)
    assert row["name"] == "astro" and row[column][:3] == b"\xff\xd8\xff"


def test_blob_without_image_bytes_is_not_a_photo_table(tmp_path):
    db = tmp_path / "notes.db"
    conn = sqlite3.connect(db)
    conn.execute("create table notes (id integer primary key, body blob)")
    conn.execute("insert into notes (body) values (x'00010203')")
    conn.commit()
    assert not APP.detect(conn)
    conn.close()


def test_several_candidate_tables_need_a_choice(tmp_path):
    db = tmp_path / "two.db"
    conn = sqlite3.connect(db)
    conn.execute("create table a (path text)")
    conn.execute("create table b (filename text)")
    conn.execute("insert into b values ('x.jpg')")
    conn.commit()
    assert not APP.detect(conn)
    with pytest.raises(SourceError, match="candidates: a, b"):
        APP.photo_list(conn, {})
    photos = APP.photo_list(conn, {"table": "b"})
    assert (photos.name, photos.key_column, photos.image_column) == ("b", "rowid", "filename")
    assert conn.execute(photos.sql).fetchall() == [(1, "x.jpg")]
    conn.close()


def test_odd_databases_never_raise(tmp_path):
    from datasette_imgsim.apps import APPS

    not_a_db = tmp_path / "junk.db"
    not_a_db.write_bytes(b"this is not sqlite at all" * 100)
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    for path in (not_a_db, empty):
        conn = sqlite3.connect(path)
        assert [app.detect(conn) for app in APPS] == [False] * len(APPS)
        conn.close()


def test_one_command_indexes_and_serves_every_photo(tmp_path):
    """`datasette imgsim index DB`, no --table and no SQL: a sidecar index over the app's
    own image ids (Photos), served with thumbnails, the app's database unchanged."""
    check_indexed_and_served(generic_db(tmp_path), "Photos")
