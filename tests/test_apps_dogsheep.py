from datasette_imgsim.apps import dogsheep
from tests.app_fixtures import check_detection, check_indexed_and_served, check_photo_list, dogsheep_db

APP = dogsheep.APP


def test_detects_dogsheep_only(tmp_path):
    check_detection(APP, tmp_path)


def test_lists_local_photo_originals(tmp_path):
    built = dogsheep_db(tmp_path)
    photos, rows = check_photo_list(APP, built)
    assert (photos.name, photos.key_column, photos.image_column) == ("apple_photos", "uuid", "path")
    assert photos.notes == ("3 rows without a local photo file skipped (movies, missing or iCloud-only)",)


def test_one_command_indexes_and_serves_every_photo(tmp_path):
    """`datasette imgsim index DB`, no --table and no SQL: a sidecar index over the app's
    own image ids (apple_photos), served with thumbnails, the app's database unchanged."""
    check_indexed_and_served(dogsheep_db(tmp_path), "apple_photos")
