"""`scan_folder`: a folder tree of photos into a photos table, incrementally."""
from __future__ import annotations

import io
import os
import sqlite3
import time

import numpy as np
import pytest

from datasette_imgsim.errors import SourceError
from PIL import Image, TiffImagePlugin

from datasette_imgsim.scan import (PHOTO_EXTENSIONS, exif_datetime, gps_coordinate,
                                   gps_position, has_photo_extension, scan_folder)

from .helpers import heic_bytes, jpeg_bytes, photo

R = TiffImagePlugin.IFDRational


def camera_exif(orientation=6, lat=((33, 1), (51, 1), (3564, 100)), lat_ref="S",
                lon=((151, 1), (12, 1), (3000, 100)), lon_ref="W") -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    exif[0x0110] = "Canon EOS R5"
    exif[0x0112] = orientation
    exif[0x0132] = "2021:07:05 09:00:00"
    sub = exif.get_ifd(0x8769)
    sub[0x9003] = "2021:07:04 12:30:45"
    sub[0xA434] = "RF24-105mm F4 L IS USM"
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = lat_ref, tuple(R(*p) for p in lat)
    gps[3], gps[4] = lon_ref, tuple(R(*p) for p in lon)
    return exif


def png_bytes(pixels) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def raw_bytes() -> bytes:
    """A camera RAW as NEF, CR2 and DNG are: a TIFF whose first IFD points to the Exif and
    GPS IFDs (Pillow's TIFF writer drops those pointers, so the header is EXIF's own)."""
    exif = camera_exif(orientation=1)
    for tag, value in {256: 60, 257: 40, 258: 8, 262: 1, 277: 1, 273: 8, 279: 2400}.items():
        exif[tag] = value
    return exif.tobytes()[6:] + bytes(2400)  # tobytes() starts with b"Exif\0\0"


def rows(db, table="photos") -> dict:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return {r["path"]: dict(r) for r in conn.execute(f"select * from {table}")}
    finally:
        conn.close()


@pytest.fixture
def tree(tmp_path):
    """A photo folder as people have them: nested folders, a symlinked one, a loop,
    hidden folders, stray files, a broken JPEG, a video, a RAW."""
    root = tmp_path / "Pictures"
    (root / "2021" / "july").mkdir(parents=True)
    (root / ".thumbnails").mkdir()
    outside = tmp_path / "elsewhere" / "album"
    outside.mkdir(parents=True)
    astronaut = photo("astronaut")[:300, :200]  # 200 wide, 300 high as stored
    (root / "2021" / "july" / "beach.jpg").write_bytes(jpeg_bytes(astronaut, exif=camera_exif()))
    (root / "2021" / "coffee.PNG").write_bytes(png_bytes(photo("coffee")[:100, :150]))
    (root / "phone.heic").write_bytes(heic_bytes(photo("chelsea")[:120, :160]))
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg" * 10)
    (root / "clip.MOV").write_bytes(b"\0\0\0\x18ftypqt  " + b"\0" * 100)
    (root / "notes.txt").write_text("not a photo")
    (root / ".hidden.jpg").write_bytes(jpeg_bytes(photo("coins")[:50, :50]))
    (root / ".thumbnails" / "thumb.jpg").write_bytes(jpeg_bytes(photo("coins")[:50, :50]))
    (root / "DSC_0001.NEF").write_bytes(raw_bytes())
    (outside / "linked.jpg").write_bytes(jpeg_bytes(photo("motorcycle")[:80, :90]))
    os.symlink(outside, root / "album-link")
    os.symlink(root, root / "2021" / "loop")  # a loop back to the top
    os.symlink(root / "2021", root / "alias-2021")  # a second way into a scanned folder
    return root


def test_scan_folder_tree(tree, tmp_path):
    db = tmp_path / "photos.db"
    seen = []
    summary = scan_folder(tree, db, progress=lambda done, total: seen.append((done, total)))
    root = str(tree.resolve())
    got = rows(db)
    expected = {f"{root}/{p}" for p in ("2021/july/beach.jpg", "2021/coffee.PNG", "phone.heic",
                                        "broken.jpg", "clip.MOV", "DSC_0001.NEF",
                                        "album-link/linked.jpg")}
    assert set(got) == expected
    assert (summary.added, summary.updated, summary.removed, summary.unchanged) == (7, 0, 0, 0)
    assert (summary.failed, summary.errors) == (0, [])
    assert seen[-1] == (7, 7) and len(seen) == 7

    beach = got[f"{root}/2021/july/beach.jpg"]
    assert beach["folder"] == f"{root}/2021/july" and beach["file_name"] == "beach.jpg"
    assert beach["size"] == (tree / "2021/july/beach.jpg").stat().st_size
    assert beach["modified"].endswith("+00:00") and beach["modified"][:4].isdigit()
    # Orientation 6: stored 200x300 on its side, so upright it is 300 wide.
    assert (beach["width"], beach["height"], beach["orientation"]) == (300, 200, 6)
    assert beach["taken_at"] == "2021-07-04T12:30:45"  # DateTimeOriginal, not DateTime
    assert (beach["camera_make"], beach["camera_model"]) == ("Canon", "Canon EOS R5")
    assert beach["lens"] == "RF24-105mm F4 L IS USM"
    assert beach["latitude"] == pytest.approx(-(33 + 51 / 60 + 35.64 / 3600), abs=1e-6)
    assert beach["longitude"] == pytest.approx(-(151 + 12 / 60 + 30 / 3600), abs=1e-6)

    coffee = got[f"{root}/2021/coffee.PNG"]
    assert (coffee["width"], coffee["height"]) == (150, 100)
    assert all(coffee[c] is None for c in ("taken_at", "camera_make", "lens", "latitude",
                                           "longitude", "orientation"))
    assert (got[f"{root}/phone.heic"]["width"], got[f"{root}/phone.heic"]["height"]) == (160, 120)
    assert got[f"{root}/album-link/linked.jpg"]["width"] == 90
    for name in ("broken.jpg", "clip.MOV"):
        row = got[f"{root}/{name}"]
        assert row["size"] == (tree / name).stat().st_size and row["modified"]
        assert row["width"] is None and row["height"] is None and row["camera_make"] is None
    nef = got[f"{root}/DSC_0001.NEF"]  # EXIF from the TIFF container; a RAW's size is not its first IFD's
    assert nef["camera_model"] == "Canon EOS R5" and nef["taken_at"] == "2021-07-04T12:30:45"
    assert nef["width"] is None


def test_incremental_rescan(tree, tmp_path):
    db = tmp_path / "photos.db"
    scan_folder(tree, db)
    before = rows(db)
    again = scan_folder(tree, db)
    assert (again.added, again.updated, again.removed, again.unchanged) == (0, 0, 0, 7)
    assert rows(db) == before

    root = str(tree.resolve())
    changed = tree / "2021" / "coffee.PNG"
    changed.write_bytes(png_bytes(photo("coffee")[:64, :80]))
    os.utime(changed, (time.time() + 10, time.time() + 10))
    (tree / "broken.jpg").unlink()
    (tree / "2021" / "july" / "new.jpeg").write_bytes(jpeg_bytes(photo("hubble")[:70, :50]))
    third = scan_folder(tree, db)
    assert (third.added, third.updated, third.removed, third.unchanged) == (1, 1, 1, 5)
    after = rows(db)
    assert set(after) == set(before) - {f"{root}/broken.jpg"} | {f"{root}/2021/july/new.jpeg"}
    coffee = after[f"{root}/2021/coffee.PNG"]
    assert coffee["id"] == before[f"{root}/2021/coffee.PNG"]["id"]  # re-embedded by key
    assert third.updated_ids == (coffee["id"],)
    assert third.removed_ids == (before[f"{root}/broken.jpg"]["id"],)
    assert (again.updated_ids, again.removed_ids) == ((), ())
    assert (coffee["width"], coffee["height"]) == (80, 64)
    assert coffee["size"] == changed.stat().st_size != before[f"{root}/2021/coffee.PNG"]["size"]
    assert after[f"{root}/2021/july/new.jpeg"]["width"] == 50
    assert after[f"{root}/2021/july/beach.jpg"] == before[f"{root}/2021/july/beach.jpg"]


def test_rows_of_other_folders_are_kept(tree, tmp_path):
    db = tmp_path / "photos.db"
    other = tmp_path / "phone-backup"
    other.mkdir()
    (other / "a.jpg").write_bytes(jpeg_bytes(photo("coins")[:40, :40]))
    scan_folder(other, db)
    summary = scan_folder(tree, db)
    assert summary.removed == 0 and summary.added == 7
    assert f"{other.resolve()}/a.jpg" in rows(db)


def test_absurd_exif_gives_nulls_not_failures(tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    exif = camera_exif(orientation=99, lat=((95, 1), (0, 1), (0, 1)), lon=((1, 0), (5, 1), (0, 1)))
    exif[0x010F] = "\0\0\0\0"
    exif[0x0132] = "0000:00:00 00:00:00"
    exif.get_ifd(0x8769)[0x9003] = "0000:00:00 00:00:00"
    exif.get_ifd(0x8769)[0xA434] = "\x01\x02garbage"
    (folder / "odd.jpg").write_bytes(jpeg_bytes(photo("coins")[:30, :40], exif=exif))
    db = tmp_path / "photos.db"
    summary = scan_folder(folder, db)
    assert (summary.added, summary.failed) == (1, 0)
    (row,) = rows(db).values()
    assert (row["width"], row["height"]) == (40, 30)
    assert row["camera_model"] == "Canon EOS R5"  # the sane fields survive
    for column in ("camera_make", "taken_at", "lens", "latitude", "longitude", "orientation"):
        assert row[column] is None, column


def test_gps_decoding_signs_and_garbage():
    dms = (R(48, 1), R(51, 1), R(2964, 100))
    assert gps_coordinate(dms, "N", 90) == pytest.approx(48.858233, abs=1e-6)
    assert gps_coordinate(dms, "S", 90) == pytest.approx(-48.858233, abs=1e-6)
    assert gps_coordinate(dms, b"W\0", 180) == pytest.approx(-48.858233, abs=1e-6)
    assert gps_coordinate(R(1225, 10), "W", 180) == -122.5  # decimal degrees in one rational
    assert gps_coordinate((R(1, 0), R(0, 1), R(0, 1)), "N", 90) is None  # zero denominator
    assert gps_coordinate((R(91, 1), R(0, 1), R(0, 1)), "N", 90) is None
    assert gps_coordinate(dms, "Q", 90) is None
    assert gps_coordinate("garbage", "N", 90) is None
    assert gps_position({1: "S", 2: dms, 3: "E", 4: dms}) == (pytest.approx(-48.858233),
                                                              pytest.approx(48.858233))
    assert gps_position({1: "N", 2: dms}) == (None, None)  # latitude without longitude
    zero = (R(0, 1), R(0, 1), R(0, 1))
    assert gps_position({1: "N", 2: zero, 3: "E", 4: zero}) == (None, None)  # no fix


def test_exif_dates():
    assert exif_datetime("2019:12:31 23:59:59") == "2019-12-31T23:59:59"
    assert exif_datetime("2019:12:31 23:59:59", "+05:30") == "2019-12-31T23:59:59+05:30"
    assert exif_datetime("2019:12:31 23:59:59", "junk") == "2019-12-31T23:59:59"
    for bad in ("0000:00:00 00:00:00", "0001:01:01 00:00:00", "    :  :     :  :  ", "2019:13:45 99:00:00", "", None, 7,
                "2019:12\x0031 23:59:59"):
        assert exif_datetime(bad) is None, bad


def test_extensions():
    assert {"jpg", "heic", "dng", "cr3", "mov", "webm", "avif"} <= PHOTO_EXTENSIONS
    assert has_photo_extension("IMG_0001.JPG") and has_photo_extension("a.Heic")
    assert not has_photo_extension("notes.txt") and not has_photo_extension("jpg")


def test_database_and_sidecar_in_the_folder_are_skipped(tmp_path):
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(jpeg_bytes(photo("coins")[:40, :40]))
    db = folder / "library.tif"  # a database named like a photo must not scan itself
    (folder / "library-imgsim.db").write_bytes(b"")
    scan_folder(folder, db)
    summary = scan_folder(folder, db)
    assert summary.unchanged == 1 and summary.added == 0
    assert [os.path.basename(p) for p in rows(db)] == ["a.jpg"]


def test_existing_app_table_is_not_touched(tmp_path):
    folder = tmp_path / "p"
    folder.mkdir()
    db = tmp_path / "app.db"
    conn = sqlite3.connect(db)
    conn.execute("create table photos (id integer primary key, path text)")
    conn.execute("insert into photos (path) values ('/gone/x.jpg')")
    conn.commit()
    conn.close()
    with pytest.raises(SourceError, match="scan columns"):
        scan_folder(folder, db)
    assert len(rows(db)) == 1
    with pytest.raises(SourceError, match="not a folder"):
        scan_folder(tmp_path / "missing", tmp_path / "new.db")


def test_cluster_map_columns(tree, tmp_path):
    """datasette-cluster-map plots any table with latitude and longitude columns."""
    db = tmp_path / "photos.db"
    scan_folder(tree, db, table="my photos")
    conn = sqlite3.connect(db)
    types = {name.lower(): kind.upper() for _, name, kind, *_ in conn.execute("pragma table_info('my photos')")}
    assert types["latitude"] == types["longitude"] == "REAL"
    points = conn.execute('select latitude, longitude from "my photos" where latitude is not null').fetchall()
    conn.close()
    assert len(points) == 2  # the JPEG and the RAW carry GPS
    assert all(isinstance(v, float) and -180 <= v <= 180 for point in points for v in point)


def test_scan_speed_smoke(tmp_path, capsys):
    folder = tmp_path / "many"
    for i in range(500):
        sub = folder / f"d{i // 50}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"{i}.jpg").write_bytes(jpeg_bytes(np.full((16, 16, 3), i % 256, np.uint8),
                                                  exif=camera_exif()))
    first = scan_folder(folder, tmp_path / "many.db")
    second = scan_folder(folder, tmp_path / "many.db")
    assert first.added == 500 and second.unchanged == 500
    with capsys.disabled():
        print(f"\nscan 500 files: {first.seconds:.3f}s first, {second.seconds:.3f}s rescan")


def test_failures_are_counted_and_rows_kept(tmp_path, monkeypatch):
    """A folder that cannot be listed and a file that cannot be opened (as permission
    denied gives when not root) fail with one line each; their rows stay."""
    import datasette_imgsim.scan as scan

    folder = tmp_path / "p"
    (folder / "locked").mkdir(parents=True)
    (folder / "locked" / "a.jpg").write_bytes(jpeg_bytes(photo("coins")[:40, :40]))
    (folder / "b.jpg").write_bytes(jpeg_bytes(photo("coins")[:40, :40]))
    (folder / "c.jpg").write_bytes(jpeg_bytes(photo("coins")[:40, :40]))
    db = tmp_path / "photos.db"
    assert scan_folder(folder, db).added == 3
    os.utime(folder / "b.jpg", (time.time() + 10, time.time() + 10))
    (folder / "c.jpg").unlink()
    denied = PermissionError(13, "Permission denied")
    real_scandir, real_open = os.scandir, open

    def scandir(path):
        if os.path.basename(path) == "locked":
            raise denied
        return real_scandir(path)

    def fake_open(path, *args, **kwargs):
        if os.path.basename(path) == "b.jpg":
            raise denied
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(scan.os, "scandir", scandir)
    monkeypatch.setattr(scan, "open", fake_open, raising=False)
    summary = scan_folder(folder, db)
    assert (summary.failed, summary.removed, summary.updated, summary.added) == (2, 1, 0, 0)
    assert sorted(os.path.basename(p) for p, _ in summary.errors) == ["b.jpg", "locked"]
    assert {m for _, m in summary.errors} == {"Permission denied"}
    assert sorted(os.path.basename(p) for p in rows(db)) == ["a.jpg", "b.jpg"]


def test_dimensions_match_what_the_indexer_decodes(tmp_path):
    """Upright width and height, as load_image sees the pixels: a JPEG's EXIF orientation
    swaps them; a HEIC comes out of libheif already rotated."""
    from datasette_imgsim.images import load_image

    folder = tmp_path / "o"
    folder.mkdir()
    pixels = photo("rocket")[:40, :60]
    (folder / "a.jpg").write_bytes(jpeg_bytes(pixels, exif=camera_exif(orientation=6)))
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "HEIF", exif=camera_exif(orientation=6))
    (folder / "b.heic").write_bytes(out.getvalue())
    db = tmp_path / "photos.db"
    scan_folder(folder, db)
    for path, row in rows(db).items():
        height, width, _ = load_image(path).shape
        assert (row["width"], row["height"], row["orientation"]) == (width, height, 6), path
        assert row["latitude"] < 0 and row["taken_at"] == "2021-07-04T12:30:45", path


def test_undecodable_file_name_fails_alone(tmp_path):
    folder = tmp_path / "n"
    folder.mkdir()
    try:
        with open(os.path.join(os.fsencode(folder), b"caf\xe9.jpg"), "wb") as f:
            f.write(jpeg_bytes(photo("coins")[:40, :40]))
    except OSError:
        pytest.skip("file system refuses non-UTF-8 names")
    for name in ("b.jpg", "a.jpg"):
        (folder / name).write_bytes(jpeg_bytes(photo("coins")[:40, :40]))
    db = tmp_path / "photos.db"
    summary = scan_folder(folder, db)
    assert (summary.added, summary.failed) == (2, 1)
    ((path, message),) = summary.errors
    assert path.endswith("caf\ufffd.jpg") and message == "name is not UTF-8"
    conn = sqlite3.connect(db)
    assert [r[0] for r in conn.execute("select file_name from photos order by id")] == ["a.jpg", "b.jpg"]
    conn.close()


def test_symlinked_files_and_date_fallback(tmp_path):
    folder, outside = tmp_path / "s", tmp_path / "out"
    folder.mkdir()
    outside.mkdir()
    exif = Image.Exif()
    exif[0x0132] = "2018:02:03 04:05:06"  # DateTime only, as some scanners and editors write
    (folder / "real.jpg").write_bytes(jpeg_bytes(photo("coins")[:40, :40], exif=exif))
    (outside / "far.jpg").write_bytes(jpeg_bytes(photo("coins")[:40, :40]))
    os.symlink(folder / "real.jpg", folder / "a-link-to-real.jpg")  # sorts first, still a duplicate
    os.symlink(outside / "far.jpg", folder / "far-link.jpg")
    os.symlink(tmp_path / "nothing.jpg", folder / "dangling.jpg")
    db = tmp_path / "photos.db"
    summary = scan_folder(folder, db)
    got = rows(db)
    assert sorted(os.path.basename(p) for p in got) == ["far-link.jpg", "real.jpg"]
    assert (summary.added, summary.failed) == (2, 0)
    assert got[f"{folder.resolve()}/real.jpg"]["taken_at"] == "2018-02-03T04:05:06"
