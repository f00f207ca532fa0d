from datasette_imgsim.apps import lightroom
from tests.app_fixtures import check_detection, check_indexed_and_served, check_photo_list, lightroom_db

APP = lightroom.APP


def test_detects_lightroom_only(tmp_path):
    check_detection(APP, tmp_path)


def test_lists_masters_not_virtual_copies(tmp_path):
    built = lightroom_db(tmp_path)
    photos, rows = check_photo_list(APP, built)
    assert (photos.name, photos.key_column, photos.image_column) == ("Adobe_images", "id_local", "path")
    assert rows[10]["path"].endswith("/disk1/Photos/astronaut.JPG")
    assert rows[12]["path"].endswith("/disk1/Photos/2018/Summer/chelsea.jpg")
    assert photos.notes == ("root folder not found: /Volumes/Macintosh HD/Users/bob/Pictures/: 1 photos skipped",)


def test_one_command_indexes_and_serves_every_photo(tmp_path):
    """`datasette imgsim index DB`, no --table and no SQL: a sidecar index over the app's
    own image ids (Adobe_images), served with thumbnails, the app's database unchanged."""
    check_indexed_and_served(lightroom_db(tmp_path), "Adobe_images")
