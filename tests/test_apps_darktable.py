import sqlite3

from datasette_imgsim.apps import darktable
from tests.app_fixtures import check_detection, check_indexed_and_served, check_photo_list, darktable_db, run

APP = darktable.APP


def test_detects_darktable_only(tmp_path):
    check_detection(APP, tmp_path)


def test_lists_each_file_once_lowest_version(tmp_path):
    built = darktable_db(tmp_path)
    photos, rows = check_photo_list(APP, built)
    assert (photos.name, photos.key_column, photos.image_column) == ("images", "id", "path")
    assert rows[5]["path"].endswith("/Bob's roll/rocket.jpg")  # version 1 stands in for the removed version 0
    assert photos.notes == (f"film roll folder not found: {tmp_path / 'unplugged' / '2010'}: 1 images skipped",)


def test_older_libraries_text_dates(tmp_path):
    built = darktable_db(tmp_path)
    conn = sqlite3.connect(built.path)
    conn.execute("update images set datetime_taken = '2012:03:04 05:06:07' where id = 1")
    conn.commit()
    conn.close()
    conn = sqlite3.connect(f"file:{built.path}?mode=ro", uri=True)
    photos = APP.photo_list(conn, {})
    conn.close()
    rows = {row["id"]: row for row in run(built.path, photos.sql)}
    assert rows[1]["datetime_taken"] == "2012-03-04 05:06:07"


def test_one_command_indexes_and_serves_every_photo(tmp_path):
    """`datasette imgsim index DB`, no --table and no SQL: a sidecar index over the app's
    own image ids (images), served with thumbnails, the app's database unchanged."""
    check_indexed_and_served(darktable_db(tmp_path), "images")
