import os

from datasette_imgsim.apps import digikam
from datasette_imgsim.apps.volumes import mount_point, parse_mounts
from tests.app_fixtures import check_detection, check_indexed_and_served, check_photo_list, digikam_db, read_only, run

APP = digikam.APP


def test_detects_digikam_only(tmp_path):
    check_detection(APP, tmp_path)


def test_lists_visible_images_on_every_root(tmp_path):
    built = digikam_db(tmp_path)
    photos, rows = check_photo_list(APP, built)
    assert (photos.name, photos.key_column, photos.image_column) == ("Images", "id", "path")
    # The unmounted disk's photo is skipped, and the user is told how to point at it.
    assert photos.notes == ("volume UUID 0b8f1e2a-7c55-4d1b-9f3e-2d6a1c0e4b77 not mounted: 1 photos skipped;"
                            " pass --volume UUID=PATH",)
    assert rows[3]["path"].endswith("/Bob's photos/coffee.jpg")


def test_uuid_root_unresolved_without_volume(tmp_path):
    built = digikam_db(tmp_path)
    conn = read_only(built.path)
    photos = APP.photo_list(conn, {}, find_mount=lambda volume, by_dir: None)
    conn.close()
    keys = {row["id"] for row in run(built.path, photos.sql)}
    assert keys == {3, 4, 5}
    assert any("3F2A-91C4 not mounted: 2 photos skipped" in note for note in photos.notes)


def test_uuid_root_found_through_mount_lookup(tmp_path):
    built = digikam_db(tmp_path)
    usb = built.options["volumes"]["3f2a-91c4"]
    asked = []

    def find_mount(volume, by_dir):
        asked.append((volume, by_dir))
        return usb if volume == "3F2A-91C4" else None

    conn = read_only(built.path)
    photos = APP.photo_list(conn, {}, find_mount=find_mount)
    conn.close()
    assert ("3F2A-91C4", "/dev/disk/by-uuid") in asked
    assert {row["id"] for row in run(built.path, photos.sql)} == set(built.expected)


def test_identifier_parsing_and_roots(tmp_path):
    assert digikam.parse_identifier("volumeid:?path=/home/bob/My%20Pictures") == (
        "volumeid", [("path", "/home/bob/My Pictures")])
    assert digikam.parse_identifier("networkshareid:?mountpath=/a&mountpath=/b")[1] == [
        ("mountpath", "/a"), ("mountpath", "/b")]
    resolve = APP.resolve_root
    assert resolve("volumeid:?uuid=ABCD", "/Pictures", {"abcd": "/media/x"}) == ("/media/x/Pictures", None)
    assert resolve("volumeid:?mountpath=/mnt/cd/", "/photos", {}) == ("/mnt/cd/photos", None)
    assert resolve("volumeid:?label=HOLIDAY", "/", {}, lambda v, d: None)[1] == "volume labelled 'HOLIDAY' not mounted"
    second = tmp_path / "second"
    second.mkdir()
    assert resolve(f"networkshareid:?mountpath={tmp_path}/first&mountpath={second}", "/", {}) == (str(second), None)
    assert resolve("file:///x", "/", {})[0] is None


def test_missing_path_root_is_skipped_with_a_note(tmp_path):
    import shutil
    import sqlite3

    built = digikam_db(tmp_path)
    shutil.rmtree(tmp_path / "nas")
    conn = sqlite3.connect(f"file:{built.path}?mode=ro", uri=True)
    photos = APP.photo_list(conn, built.options)
    conn.close()
    assert {row["id"] for row in run(built.path, photos.sql)} == {1, 2, 3, 4}
    assert f"album root folder not found: {tmp_path / 'nas' / 'photos'}: 1 photos skipped" in photos.notes


def test_mount_point_reads_udev_links_and_proc_mounts(tmp_path):
    by_uuid = tmp_path / "by-uuid"
    by_uuid.mkdir()
    device = tmp_path / "sdb1"
    device.write_text("")
    os.symlink(device, by_uuid / "3F2A-91C4")
    mounts = tmp_path / "mounts"
    mounts.write_text(f"/dev/sda1 / ext4 rw 0 0\n{device} /media/bob/My\\040Disk vfat rw 0 0\n")
    assert mount_point("3f2a-91c4", str(by_uuid), str(mounts)) == "/media/bob/My Disk"
    assert mount_point("FFFF-0000", str(by_uuid), str(mounts)) is None
    assert mount_point("../etc", str(by_uuid), str(mounts)) is None
    assert parse_mounts("tmpfs /run tmpfs rw 0 0") == [("tmpfs", "/run")]


def test_one_command_indexes_and_serves_every_photo(tmp_path):
    """`datasette imgsim index DB`, no --table and no SQL: a sidecar index over the app's
    own image ids (Images), served with thumbnails, the app's database unchanged."""
    check_indexed_and_served(digikam_db(tmp_path), "Images")
