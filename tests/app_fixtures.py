"""Photo-manager databases built from the apps' real schemas (tests/fixtures/apps/*.sql), filled the
way each app fills them, with real photos (scikit-image's) written as small JPEG files in the
folders each app expects. Every builder also inserts the rows its preset must skip.

Each builder returns an AppDB: the database path, the photos the preset must list ({key: absolute
path}), the keys it must not list, the roots it must report and the options to pass.
"""
from __future__ import annotations

import datetime
import functools
import hashlib
import sqlite3
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from tests.helpers import jpeg_bytes, photo

SCHEMAS = Path(__file__).parent / "fixtures" / "apps"


@dataclass
class AppDB:
    path: Path
    expected: dict  # key -> absolute path (or relative path, generic only) the preset must list
    skipped: set  # keys of rows the preset must leave out
    roots: tuple = ()
    options: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)  # key -> version_of, as versions_sql must report
    captions: dict = field(default_factory=dict)  # key -> caption, for the rows that have one set
    dates: dict = field(default_factory=dict)  # key -> ISO date text


@functools.lru_cache(maxsize=None)
def small_jpeg(name: str) -> bytes:
    """A real photo, at most 256 px, as JPEG bytes: small enough to keep the tests quick."""
    image = Image.fromarray(photo(name))
    image.thumbnail((256, 256))
    return jpeg_bytes(np.asarray(image))


def write_photo(path: Path, name: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(small_jpeg(name))
    return str(path)


def create_db(path: Path, app: str) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.executescript((SCHEMAS / f"{app}.sql").read_text())
    return conn


def file_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def run(path: Path, sql: str) -> list[dict]:
    """Rows of `sql` on a read-only connection, as dicts."""
    conn = read_only(path)
    try:
        cursor = conn.execute(sql)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]
    finally:
        conn.close()


def digikam_db(tmp: Path) -> AppDB:
    """digiKam: a root on a USB disk found by UUID, a root by path (a folder name with a space and a
    quote), a network share, and a root on a disk that is not mounted."""
    usb = tmp / "media" / "usb-disk"  # mount point of volume 3F2A-91C4; the root is its /Pictures
    home = tmp / "home" / "Bob's photos"
    nas = tmp / "nas" / "photos"
    files = {
        1: write_photo(usb / "Pictures" / "astronaut.jpg", "astronaut"),
        2: write_photo(usb / "Pictures" / "2020" / "Trip" / "chelsea.jpg", "chelsea"),
        3: write_photo(home / "coffee.jpg", "coffee"),
        4: write_photo(home / "Family" / "rocket.jpg", "rocket"),
        5: write_photo(nas / "camera.jpg", "camera"),
    }
    (usb / "Pictures" / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    write_photo(home / "Family" / "hidden.jpg", "chelsea")
    write_photo(home / "trashed.jpg", "coffee")
    db = tmp / "digikam" / "digikam4.db"
    conn = create_db(db, "digikam")
    home_path = str(home).replace(" ", "%20")  # QUrl percent-encodes the space, keeps the quote
    conn.executemany("insert into AlbumRoots (id, label, status, type, identifier, specificPath) values (?,?,?,?,?,?)", [
        (1, "USB", 0, 2, "volumeid:?uuid=3F2A-91C4", "/Pictures"),
        (2, "Home", 0, 1, f"volumeid:?path={home_path}", "/"),
        (3, "NAS", 0, 3, f"networkshareid:?mountpath={nas}", "/"),
        (4, "Old disk", 0, 2, "volumeid:?uuid=0b8f1e2a-7c55-4d1b-9f3e-2d6a1c0e4b77", "/photos"),
    ])
    conn.executemany("insert into Albums (id, albumRoot, relativePath, date) values (?,?,?,?)", [
        (1, 1, "/", "2020-01-01"), (2, 1, "/2020/Trip", "2020-06-01"), (3, 2, "/", "2021-01-01"),
        (4, 2, "/Family", "2021-02-01"), (5, 3, "/", "2022-01-01"), (6, 4, "/", "2019-01-01"),
    ])
    # (id, album, name, status, category): status 1 visible, 2 hidden, 3 trashed; category 1 image, 2 video.
    conn.executemany("insert into Images (id, album, name, status, category, fileSize) values (?,?,?,?,?,1000)", [
        (1, 1, "astronaut.jpg", 1, 1), (2, 2, "chelsea.jpg", 1, 1), (3, 3, "coffee.jpg", 1, 1),
        (4, 4, "rocket.jpg", 1, 1), (5, 5, "camera.jpg", 1, 1),
        (6, 1, "clip.mp4", 1, 2), (7, 4, "hidden.jpg", 2, 1), (8, 3, "trashed.jpg", 3, 1),
        (9, 6, "lost.jpg", 1, 1),
    ])
    conn.executemany("insert into ImageInformation (imageid, creationDate, width, height, format) values (?,?,256,256,'JPG')",
                     [(1, "2020-01-05T10:00:00.000"), (2, "2020-06-02T16:30:00.000"), (4, "2021-02-03T09:15:00.000")])
    conn.execute("insert into ImageComments (imageid, type, language, comment) values (4, 3, 'x-default', 'Launch day')")
    conn.execute("insert into ImageComments (imageid, type, language, comment) values (4, 1, 'x-default', 'a long description')")
    conn.execute("insert into ImageRelations (subject, object, type) values (3, 1, 1)")
    conn.commit()
    conn.close()
    return AppDB(db, files, {6, 7, 8, 9},
                 roots=(str(usb / "Pictures"), str(home), str(nas)),
                 options={"volumes": {"3f2a-91c4": str(usb)}},
                 versions={3: 1},
                 captions={1: "astronaut.jpg", 4: "Launch day"},
                 dates={1: "2020-01-05T10:00:00.000", 4: "2021-02-03T09:15:00.000"})


def shotwell_db(tmp: Path) -> AppDB:
    """Shotwell: absolute file names under ~/Pictures (not next to the database), a trashed photo, an
    offline one (file gone), an externally edited one, and a video."""
    pictures = tmp / "home" / "Pictures"
    files = {
        1: write_photo(pictures / "2021" / "03" / "14" / "astronaut.jpg", "astronaut"),
        2: write_photo(pictures / "2021" / "03" / "15" / "chelsea.jpg", "chelsea"),
        3: write_photo(pictures / "Imports" / "coffee.jpg", "coffee"),
        7: write_photo(pictures / "2021" / "04" / "01" / "rocket.jpg", "rocket"),
    }
    trashed = write_photo(pictures / "2021" / "03" / "16" / "trashed.jpg", "camera")
    edited = write_photo(pictures / "2021" / "03" / "15" / "chelsea_modified.jpg", "chelsea")
    db = tmp / "home" / ".local" / "share" / "shotwell" / "data" / "photo.db"
    conn = create_db(db, "shotwell")
    conn.execute("insert into VersionTable (schema_version, app_version) values (20, '0.30.17')")
    march14 = int(datetime.datetime(2021, 3, 14, 9, 26, 53, tzinfo=datetime.timezone.utc).timestamp())
    rows = [  # id, filename, exposure_time, flags, title, editable_id
        (1, files[1], march14, 0, None, -1),
        (2, files[2], march14 + 86400, 0, "Chelsea the cat", 1),
        (3, files[3], 0, 0, "", -1),
        (4, trashed, march14, 0x4, None, -1),  # FLAG_TRASH
        (5, str(pictures / "2021" / "03" / "17" / "gone.jpg"), march14, 0x8, None, -1),  # FLAG_OFFLINE
        (6, str(pictures / "fav-trashed.jpg"), march14, 0x4 | 0x2, None, -1),
        (7, files[7], march14, 0x10 | 0x2, None, -1),  # flagged + favourite: still a library photo
    ]
    conn.executemany("insert into PhotoTable (id, filename, width, height, filesize, timestamp, exposure_time, "
                     "orientation, original_orientation, import_id, event_id, md5, time_created, flags, rating, "
                     "file_format, title, editable_id) values (?, ?, 256, 256, 1000, 0, ?, 1, 1, 1, 1, '', 0, ?, 0, 0, ?, ?)",
                     [(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows])
    conn.execute("insert into BackingPhotoTable (id, filepath, timestamp, filesize, width, height, "
                 "original_orientation, file_format, time_created) values (1, ?, 0, 1000, 256, 256, 1, 0, 0)", (edited,))
    conn.execute("insert into VideoTable (id, filename, width, height, clip_duration, is_interpretable, filesize, "
                 "timestamp, exposure_time, import_id, event_id, md5, time_created, flags) "
                 "values (1, ?, 640, 480, 3.5, 1, 1000, 0, 0, 1, 1, '', 0, 0)", (str(pictures / "clip.mp4"),))
    conn.commit()
    conn.close()
    return AppDB(db, files, {4, 5, 6},
                 # Shotwell keeps no library root in the database: the folders holding its photos are the roots.
                 roots=tuple(str(Path(files[k]).parent) for k in (1, 2, 7, 3)),
                 versions={"BackingPhotoTable:1": 2},
                 captions={1: "astronaut.jpg", 2: "Chelsea the cat", 3: "coffee.jpg"},
                 dates={1: "2021-03-14 09:26:53", 2: "2021-03-15 09:26:53", 3: None})


def _gtimespan(moment: datetime.datetime) -> int:
    """darktable's datetime_taken: microseconds since 0001-01-01 00:00:00."""
    delta = moment - datetime.datetime(1, 1, 1)
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def darktable_db(tmp: Path) -> AppDB:
    """darktable: two film rolls, a duplicate (version 1) of one file, a file whose version 0 was
    removed (versions 1 and 2 left: 1 is indexed), and a film roll on a disk that is gone."""
    roll1 = tmp / "photos" / "2019-07-14 Trip"
    roll2 = tmp / "photos" / "Bob's roll"
    files = {
        1: write_photo(roll1 / "astronaut.jpg", "astronaut"),
        3: write_photo(roll2 / "chelsea.jpg", "chelsea"),
        4: write_photo(roll2 / "coffee.jpg", "coffee"),
        5: write_photo(roll2 / "rocket.jpg", "rocket"),
    }
    db = tmp / "config" / "darktable" / "library.db"
    conn = create_db(db, "darktable")
    conn.executemany("insert into film_rolls (id, access_timestamp, folder) values (?, 0, ?)",
                     [(1, str(roll1)), (2, str(roll2)), (3, str(tmp / "unplugged" / "2010"))])
    taken = _gtimespan(datetime.datetime(2019, 7, 14, 12, 30, 5))
    rows = [  # id, group_id, film_id, filename, version, max_version, datetime_taken
        (1, 1, 1, "astronaut.jpg", 0, 1, taken),
        (2, 1, 1, "astronaut.jpg", 1, 1, taken),  # darktable duplicate of 1
        (3, 3, 2, "chelsea.jpg", 0, 0, None),
        (4, 4, 2, "coffee.jpg", 0, 0, taken + 1_000_000),
        (5, 5, 2, "rocket.jpg", 1, 2, taken),
        (6, 5, 2, "rocket.jpg", 2, 2, taken),
        (7, 7, 3, "old.jpg", 0, 0, taken),
    ]
    conn.executemany("insert into images (id, group_id, film_id, width, height, filename, datetime_taken, flags, "
                     "version, max_version, orientation) values (?, ?, ?, 256, 256, ?, ?, 0, ?, ?, 0)",
                     [(r[0], r[1], r[2], r[3], r[6], r[4], r[5]) for r in rows])
    conn.commit()
    conn.close()
    return AppDB(db, files, {2, 6, 7}, roots=(str(roll1), str(roll2)), versions={2: 1, 6: 5},
                 captions={1: "astronaut.jpg"},
                 dates={1: "2019-07-14 12:30:05", 3: None, 4: "2019-07-14 12:30:06"})


def lightroom_db(tmp: Path) -> AppDB:
    """Lightroom Classic: one root folder per disk, a virtual copy, and a root from another machine."""
    disk1 = tmp / "disk1" / "Photos"
    disk2 = tmp / "disk2" / "Bob's Archive"
    files = {
        10: write_photo(disk1 / "astronaut.JPG", "astronaut"),
        12: write_photo(disk1 / "2018" / "Summer" / "chelsea.jpg", "chelsea"),
        13: write_photo(disk2 / "coffee.jpeg", "coffee"),
    }
    db = tmp / "Lightroom" / "Lightroom Catalog.lrcat"
    conn = create_db(db, "lightroom")

    def gid():
        return str(uuidlib.uuid4()).upper()

    conn.executemany("insert into AgLibraryRootFolder (id_local, id_global, absolutePath, name) values (?, ?, ?, ?)", [
        (1, gid(), f"{disk1}/", "Photos"), (2, gid(), f"{disk2}/", "Bob's Archive"),
        (3, gid(), "/Volumes/Macintosh HD/Users/bob/Pictures/", "Pictures"),
    ])
    conn.executemany("insert into AgLibraryFolder (id_local, id_global, pathFromRoot, rootFolder) values (?, ?, ?, ?)", [
        (20, gid(), "", 1), (21, gid(), "2018/Summer/", 1), (22, gid(), "", 2), (23, gid(), "", 3),
    ])
    conn.executemany("insert into AgLibraryFile (id_local, id_global, baseName, extension, folder, idx_filename, "
                     "lc_idx_filename, lc_idx_filenameExtension, originalFilename) values (?, ?, ?, ?, ?, ?, ?, ?, ?)", [
        (30, gid(), "astronaut", "JPG", 20, "astronaut.JPG", "astronaut.jpg", "jpg", "astronaut.JPG"),
        (31, gid(), "chelsea", "jpg", 21, "chelsea.jpg", "chelsea.jpg", "jpg", "chelsea.jpg"),
        (32, gid(), "coffee", "jpeg", 22, "coffee.jpeg", "coffee.jpeg", "jpeg", "coffee.jpeg"),
        (33, gid(), "mac", "jpg", 23, "mac.jpg", "mac.jpg", "jpg", "mac.jpg"),
    ])
    conn.executemany("insert into Adobe_images (id_local, id_global, captureTime, copyName, fileFormat, masterImage, "
                     "rootFile, rating) values (?, ?, ?, ?, 'JPG', ?, ?, ?)", [
        (10, gid(), "2018-07-01T10:11:12", None, None, 30, 3),
        (11, gid(), "2018-07-01T10:11:12", "Copy 1", 10, 30, None),  # virtual copy of 10
        (12, gid(), "2018-08-02T08:00:00.50", None, None, 31, None),
        (13, gid(), None, None, None, 32, 5),
        (14, gid(), "2015-01-01T00:00:00", None, None, 33, None),  # on a Mac disk that is not here
    ])
    conn.commit()
    conn.close()
    return AppDB(db, files, {11, 14}, roots=(str(disk1), str(disk2)), versions={11: 10},
                 captions={10: "astronaut.JPG"}, dates={10: "2018-07-01T10:11:12", 13: None})


def dogsheep_db(tmp: Path) -> AppDB:
    """dogsheep-photos: apple_photos rows with originals inside a Photos library, plus a movie, an
    iCloud-only photo (path NULL) and a missing one."""
    originals = tmp / "Pictures" / "Photos Library.photoslibrary" / "originals"
    uuids = {name: str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, name)).upper()
             for name in ("astronaut", "chelsea", "coffee", "movie", "icloud", "missing")}
    files = {uuids[n]: write_photo(originals / uuids[n][0] / f"{uuids[n]}.jpeg", n)
             for n in ("astronaut", "chelsea", "coffee")}
    db = tmp / "dogsheep" / "photos.db"
    conn = create_db(db, "dogsheep")
    rows = [  # uuid, filename, title, date, path, ismovie, ismissing, isphoto, path_edited
        (uuids["astronaut"], "IMG_0001.JPG", "Spacewalk", "2019-05-01T10:00:00+00:00", files[uuids["astronaut"]], 0, 0, 1, None),
        (uuids["chelsea"], "IMG_0002.JPG", None, "2019-05-02T10:00:00+00:00", files[uuids["chelsea"]], 0, 0, 1,
         str(tmp / "Pictures" / "edited.jpeg")),
        (uuids["coffee"], "IMG_0003.HEIC", "", "2019-05-03T10:00:00+00:00", files[uuids["coffee"]], 0, 0, 1, None),
        (uuids["movie"], "IMG_0004.MOV", None, "2019-05-04T10:00:00+00:00", str(originals / "M" / "movie.mov"), 1, 0, 0, None),
        (uuids["icloud"], "IMG_0005.JPG", None, "2019-05-05T10:00:00+00:00", None, 0, 0, 1, None),
        (uuids["missing"], "IMG_0006.JPG", None, "2019-05-06T10:00:00+00:00", str(originals / "X" / "gone.jpeg"), 0, 1, 1, None),
    ]
    conn.executemany("insert into apple_photos (uuid, filename, title, date, path, ismovie, ismissing, isphoto, "
                     "path_edited, sha256) values (?, ?, ?, ?, ?, ?, ?, ?, ?, 'x')", rows)
    conn.commit()
    conn.close()
    return AppDB(db, files, {uuids["movie"], uuids["icloud"], uuids["missing"]},
                 roots=tuple(sorted({str(originals / uuids[n][0]) for n in ("astronaut", "chelsea", "coffee")})),
                 versions={f"{uuids['chelsea']}:edited": uuids["chelsea"]},
                 captions={uuids["astronaut"]: "Spacewalk", uuids["chelsea"]: "IMG_0002.JPG",
                           uuids["coffee"]: "IMG_0003.HEIC"},
                 dates={uuids["astronaut"]: "2019-05-01T10:00:00+00:00"})


def generic_db(tmp: Path) -> AppDB:
    """A hand-made catalogue: one photos table of relative paths (one absolute), next to a table
    of albums and the plugin's own _imgsim_ tables, which must not count."""
    folder = tmp / "catalogue"
    files = {
        1: write_photo(folder / "img" / "astronaut.jpg", "astronaut"),
        2: write_photo(folder / "img" / "chelsea.jpg", "chelsea"),
        3: write_photo(tmp / "elsewhere" / "coffee.jpg", "coffee"),
    }
    db = folder / "catalogue.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db)
    conn.executescript("""
        create table albums (id integer primary key, name text);
        create table Photos (id integer primary key, Title text, taken text, FilePath text, album integer);
        create table _imgsim_photos (id integer primary key, path text, vector blob);
    """)
    conn.executemany("insert into Photos values (?, ?, ?, ?, 1)", [
        (1, "Astronaut", "2020-01-01", "img/astronaut.jpg"), (2, "Chelsea", "2020-01-02", "img/chelsea.jpg"),
        (3, "Coffee", None, files[3]), (4, "No file yet", None, None),
    ])
    conn.commit()
    conn.close()
    expected = {1: "img/astronaut.jpg", 2: "img/chelsea.jpg", 3: files[3]}
    return AppDB(db, expected, {4}, roots=(str(tmp / "elsewhere"), str(folder)),
                 captions={1: "Astronaut"}, dates={1: "2020-01-01"})


def check_photo_list(app, built: AppDB, options=None):
    """Run the preset the way the indexer will and check what every preset promises: exactly the
    expected keys and files, none of the skipped rows, the right roots, and the app database left
    byte-for-byte as it was. Returns (PhotoList, rows by key) for preset-specific checks."""
    import os

    before = file_hash(built.path)
    conn = read_only(built.path)
    try:
        photos = app.photo_list(conn, built.options if options is None else options)
    finally:
        conn.close()
    rows = run(built.path, photos.sql)
    by_key = {row[photos.key_column]: row for row in rows}
    assert len(by_key) == len(rows), "a photo is listed twice"
    assert set(by_key) == set(built.expected)
    assert not set(by_key) & built.skipped
    for key, path in built.expected.items():
        assert by_key[key][photos.image_column] == path
        if os.path.isabs(path):
            assert os.path.isfile(path)
    assert sorted(photos.roots) == sorted(os.path.realpath(r) for r in built.roots)
    assert len(set(photos.roots)) == len(photos.roots)
    for key, caption in built.captions.items():
        assert by_key[key][photos.caption_column] == caption
    for key, date in built.dates.items():
        assert by_key[key][photos.date_column] == date
    if built.versions:
        versions = run(built.path, photos.versions_sql)
        assert {row["key"]: row["version_of"] for row in versions} == built.versions
    assert file_hash(built.path) == before
    assert photos.app == app.name
    return photos, by_key


def check_detection(app, tmp: Path) -> None:
    """detect() is True on the app's own database and False on every other app's."""
    from datasette_imgsim.apps import detect_app

    for name, built in all_app_dbs(tmp).items():
        before = file_hash(built.path)
        conn = read_only(built.path)
        try:
            assert app.detect(conn) is (name == app.name), name
            assert detect_app(conn).name == name
        finally:
            conn.close()
        assert file_hash(built.path) == before


BUILDERS = {"digikam": digikam_db, "shotwell": shotwell_db, "darktable": darktable_db,
            "lightroom": lightroom_db, "dogsheep": dogsheep_db, "generic": generic_db}


def all_app_dbs(tmp: Path) -> dict[str, AppDB]:
    return {name: build(tmp / name) for name, build in BUILDERS.items()}


def check_indexed_and_served(built: AppDB, name: str) -> None:
    """What a user of the app gets from one command with no SQL: every photo row indexed
    into a sidecar, the app database byte-for-byte unchanged, every row searchable, its
    similar page and every result's thumbnail served, and thumbnail cells on the table page."""
    import asyncio

    from click.testing import CliRunner
    from datasette.app import Datasette
    from datasette.cli import cli

    from datasette_imgsim import ImageIndex
    from datasette_imgsim.store.sidecar import sidecar_path

    before = file_hash(built.path)
    args = ["imgsim", "index", str(built.path), "--method", "phash", "--workers", "1"]
    for uuid, path in built.options.get("volumes", {}).items():
        args += ["--volume", f"{uuid}={path}"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert f"{len(built.expected)} indexed" in result.output and " 0 failed" in result.output
    assert file_hash(built.path) == before, "the app's database was written to"
    assert sidecar_path(built.path).exists()
    with ImageIndex.open(built.path) as index:
        (status,) = index.status()
        assert status["table"] == name and status["indexed"] == len(built.expected)
        for key in built.expected:
            assert index.similar_to_row(name, key, k=2), key
    database = built.path.stem

    async def pages():
        ds = Datasette([str(built.path)], settings={"num_sql_threads": 1})
        base = ds.urls.table(database, name)  # "Lightroom Catalog" is Lightroom~20Catalog
        for key in built.expected:
            response = await ds.client.get(f"{base}/-/similar/{key}.json")
            assert response.status_code == 200, response.text[:300]
            results = response.json()["results"]
            assert results
            for item in results:
                thumbnail = await ds.client.get(item["thumbnail_url"])
                assert thumbnail.status_code == 200, (key, item["pk"], thumbnail.text[:300])
                assert thumbnail.headers["content-type"] == "image/jpeg"
            html = await ds.client.get(f"{base}/-/similar/{key}")
            assert html.status_code == 200
        table = await ds.client.get(base)
        assert table.status_code == 200 and 'class="imgsim-cell"' in table.text
        assert file_hash(built.path) == before

    asyncio.run(pages())
