from datasette_imgsim.apps import shotwell
from tests.app_fixtures import check_detection, check_indexed_and_served, check_photo_list, run, shotwell_db

APP = shotwell.APP


def test_detects_shotwell_only(tmp_path):
    check_detection(APP, tmp_path)


def test_lists_library_photos_not_trashed_or_offline(tmp_path):
    built = shotwell_db(tmp_path)
    photos, rows = check_photo_list(APP, built)
    assert (photos.name, photos.key_column, photos.image_column) == ("PhotoTable", "id", "filename")
    # The database lives in ~/.local/share; the photos do not.
    assert all(not path.startswith(str(built.path.parent)) for path in built.expected.values())
    assert photos.notes == ("2 trashed and 1 offline photos skipped", "1 videos in VideoTable not indexed (photos only)")


def test_external_edit_is_a_version_not_a_photo(tmp_path):
    built = shotwell_db(tmp_path)
    photos, rows = check_photo_list(APP, built)
    (edit,) = run(built.path, photos.versions_sql)
    assert edit["kind"] == "editable" and edit["path"].endswith("chelsea_modified.jpg")
    assert edit["path"] not in {row["filename"] for row in rows.values()}


def test_one_command_indexes_and_serves_every_photo(tmp_path):
    """`datasette imgsim index DB`, no --table and no SQL: a sidecar index over the app's
    own image ids (PhotoTable), served with thumbnails, the app's database unchanged."""
    check_indexed_and_served(shotwell_db(tmp_path), "PhotoTable")
