"""Scan a folder tree of photos into a SQLite table, incrementally: new, changed and
removed files. Metadata comes from file headers only (no pixel decode)."""
from __future__ import annotations

import math
import os
import sqlite3
import stat
import time
import warnings
from datetime import datetime, timezone
from typing import Callable, NamedTuple, Optional

from .errors import SourceError

IMAGE_EXTENSIONS = frozenset("jpg jpeg png webp gif tif tiff bmp heic heif avif".split())
RAW_EXTENSIONS = frozenset("cr2 cr3 nef nrw arw orf rw2 raf pef srw dng".split())
VIDEO_EXTENSIONS = frozenset("mov mp4 m4v avi mkv 3gp webm".split())
PHOTO_EXTENSIONS = IMAGE_EXTENSIONS | RAW_EXTENSIONS | VIDEO_EXTENSIONS
# Most camera RAW formats are TIFF containers: their first IFD names camera and date.
TIFF_RAW_EXTENSIONS = frozenset("cr2 nef nrw arw pef srw dng".split())

COLUMNS = ("path", "folder", "file_name", "size", "modified", "width", "height", "taken_at",
           "camera_make", "camera_model", "lens", "latitude", "longitude", "orientation")
SCHEMA = """create table if not exists {table} (
    id integer primary key, path text unique not null, folder text, file_name text,
    size integer, modified text, width integer, height integer, taken_at text,
    camera_make text, camera_model text, lens text, latitude real, longitude real,
    orientation integer)"""
BATCH = 250  # rows written per transaction
# Pillow's openers for these read the whole file, so larger ones get filesystem facts only.
WHOLE_FILE_READERS, WHOLE_FILE_LIMIT = frozenset({"heic", "heif", "avif", "webp"}), 256 << 20


class ScanSummary(NamedTuple):
    added: int
    updated: int
    removed: int
    unchanged: int
    failed: int
    errors: list  # [(path, message)]
    seconds: float
    updated_ids: tuple = ()  # rows whose file changed: their image features are stale
    removed_ids: tuple = ()  # rows deleted: drop their features


def has_photo_extension(name: str) -> bool:
    return os.path.splitext(name)[1][1:].lower() in PHOTO_EXTENSIONS


def _fail(errors: list, path: str, error: Exception) -> None:
    """Record a one-line error; undecodable bytes in the name shown as U+FFFD."""
    message = "name is not UTF-8" if isinstance(error, UnicodeError) else (
        getattr(error, "strerror", None) or str(error) or type(error).__name__)
    errors.append((path.encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
                   message.splitlines()[0]))


def walk(root: str, skip=frozenset(), errors=None):
    """(path, stat) of the photo files under root, hidden entries and skip (real paths)
    left out. Real folders are walked before symlinked ones and each real folder once, so
    links into the tree (or loops) add nothing; symlinked files come last, if new."""
    visited, found, folders, linked, files, file_links = set(), set(), [root], [], [], []
    skip_names = {os.path.basename(path) for path in skip}
    errors = [] if errors is None else errors
    while folders or linked:
        folder = folders.pop() if folders else linked.pop(0)
        if os.path.realpath(folder) in visited:
            continue
        visited.add(os.path.realpath(folder))
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            _fail(errors, folder, e)
            continue
        for entry in entries:
            if entry.name.startswith(".") or (entry.name in skip_names and os.path.realpath(entry.path) in skip):
                continue
            try:
                entry.path.encode("utf-8")  # sqlite3 cannot store an undecodable name
                if entry.is_dir():
                    (linked if entry.is_symlink() else folders).append(entry.path)
                elif has_photo_extension(entry.name) and entry.is_file():
                    (file_links if entry.is_symlink() else files).append(entry.path)
            except (OSError, UnicodeError) as e:
                _fail(errors, entry.path, e)
    for n, path in enumerate(sorted(files) + sorted(file_links)):
        try:
            st = os.stat(path)
        except OSError as e:
            _fail(errors, path, e)
            continue
        if stat.S_ISREG(st.st_mode) and (n < len(files) or (st.st_dev, st.st_ino) not in found):
            found.add((st.st_dev, st.st_ino))
            yield path, st


def _text(value) -> Optional[str]:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    value = value.split("\0", 1)[0].strip()
    if not value or len(value) > 200 or any(ord(c) < 32 or c == "\ufffd" for c in value):
        return None
    return value


def _float(value) -> Optional[float]:
    try:
        number = float(value)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None
    return number if math.isfinite(number) and number >= 0 else None


def exif_datetime(value, offset=None) -> Optional[str]:
    """An EXIF "YYYY:MM:DD HH:MM:SS" as ISO 8601, with its UTC offset when one is given."""
    try:
        parsed = datetime.strptime(_text(value)[:19], "%Y:%m:%d %H:%M:%S")
    except (TypeError, ValueError):
        return None
    try:
        parsed = parsed.replace(tzinfo=datetime.strptime(_text(offset) or "", "%z").tzinfo)
    except ValueError:
        pass
    return parsed.isoformat() if parsed.year >= 1800 else None


def gps_coordinate(value, ref, limit: float) -> Optional[float]:
    """Decimal degrees from EXIF degrees/minutes/seconds rationals; negative for S and W."""
    parts = value if isinstance(value, (tuple, list)) else (value,)
    numbers = [_float(part) for part in parts[:3]]
    ref = (_text(ref) or "").upper()
    if not numbers or None in numbers or ref not in ("", "N", "E", "S", "W"):
        return None
    degrees = sum(n / 60 ** i for i, n in enumerate(numbers)) * (-1 if ref in ("S", "W") else 1)
    return round(degrees, 7) if abs(degrees) <= limit else None


def gps_position(gps: dict):
    """(latitude, longitude) from a GPS IFD, or (None, None); 0,0 means no fix."""
    latitude = gps_coordinate(gps.get(2), gps.get(1), 90)
    longitude = gps_coordinate(gps.get(4), gps.get(3), 180)
    if latitude is None or longitude is None or (latitude == 0 and longitude == 0):
        return None, None
    return latitude, longitude


def image_metadata(file, extension: str) -> dict:
    """Header facts of an open image file; {} for what Pillow cannot read."""
    from PIL import Image

    facts: dict = {}
    if extension in VIDEO_EXTENSIONS or extension in RAW_EXTENSIONS - TIFF_RAW_EXTENSIONS:
        return facts
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(file, formats=["TIFF"] if extension in RAW_EXTENSIONS else None)
            if extension not in RAW_EXTENSIONS and min(img.size) > 0:  # a RAW's IFD0: a preview
                facts["width"], facts["height"] = img.size
            # A PNG's getexif decodes the pixels to find an eXIf chunk after them.
            exif = img.getexif() if img.format != "PNG" or "exif" in img.info else {}
            if not exif:
                return facts
            orientation = exif.get(0x0112)
            if img.format == "HEIF":  # libheif already rotated it; pillow-heif reset the tag
                orientation = img.info.get("original_orientation", orientation)
            elif orientation in (5, 6, 7, 8) and "width" in facts:
                facts["width"], facts["height"] = facts["height"], facts["width"]
            if isinstance(orientation, int) and 1 <= orientation <= 8:
                facts["orientation"] = orientation
            facts["camera_make"], facts["camera_model"] = _text(exif.get(0x010F)), _text(exif.get(0x0110))
            sub = _ifd(exif, 0x8769)
            facts["lens"] = _text(sub.get(0xA434))
            facts["taken_at"] = (exif_datetime(sub.get(0x9003), sub.get(0x9011))
                                 or exif_datetime(exif.get(0x0132), sub.get(0x9010)))
            facts["latitude"], facts["longitude"] = gps_position(_ifd(exif, 0x8825))
    except Exception:  # corrupt or absurd headers: NULL for what could not be read
        pass
    return facts


def _ifd(exif, tag: int) -> dict:
    try:
        return exif.get_ifd(tag) or {}
    except Exception:
        return {}


def scan_folder(folder, db_path, table: str = "photos",
                progress: Optional[Callable[[int, int], None]] = None) -> ScanSummary:
    """Bring table in db_path up to date with the photo files under folder.

    Rows are keyed by absolute path; an unchanged (size, mtime) is not re-read, a changed
    file keeps its id, and rows of vanished files under folder are deleted (rows of other
    folders are left alone). progress(done, total) is called as files are processed."""
    started = time.monotonic()
    root = os.path.realpath(os.path.expanduser(os.fspath(folder)))
    if not os.path.isdir(root):
        raise SourceError(f"not a folder: {folder}")
    db_real = os.path.realpath(os.fspath(db_path))
    sidecar = os.path.splitext(db_real)[0] + "-imgsim.db"
    skip = {base + end for base in (db_real, sidecar) for end in ("", "-wal", "-shm", "-journal")}
    try:
        from pillow_heif import register_heif_opener
        register_heif_opener()
    except ImportError:  # no pillow-heif wheel for this platform: HEIC rows get NULLs
        pass
    errors: list = []
    files = list(walk(root, frozenset(skip), errors))
    conn = sqlite3.connect(db_real, timeout=30)
    try:
        name = '"' + table.replace('"', '""') + '"'
        conn.execute(SCHEMA.format(table=name))
        present = {row[1] for row in conn.execute(f"pragma table_info({name})")}
        missing = [c for c in ("id", *COLUMNS) if c not in present]
        if missing:
            raise SourceError(f"table {table} exists without scan columns: {', '.join(missing)}")
        known = {path: (id, size, modified) for id, path, size, modified
                 in conn.execute(f"select id, path, size, modified from {name}")}
        counts = dict(added=0, updated=0, removed=0, unchanged=0)
        seen, pending, updated_ids = set(), 0, []
        insert = f"insert into {name} ({', '.join(COLUMNS)}) values ({', '.join('?' * len(COLUMNS))})"
        update = f"update {name} set {', '.join(c + ' = ?' for c in COLUMNS)} where id = ?"
        for done, (path, st) in enumerate(files, 1):
            seen.add(path)
            modified = datetime.fromtimestamp(st.st_mtime_ns / 1e9, timezone.utc).isoformat()
            row = known.get(path)
            if row is not None and row[1:] == (st.st_size, modified):
                counts["unchanged"] += 1
            else:
                try:
                    extension = os.path.splitext(path)[1][1:].lower()
                    with open(path, "rb") as file:
                        facts = ({} if extension in WHOLE_FILE_READERS and st.st_size > WHOLE_FILE_LIMIT
                                 else image_metadata(file, extension))
                except OSError as e:
                    _fail(errors, path, e)
                else:
                    values = [path, os.path.dirname(path), os.path.basename(path), st.st_size, modified]
                    values += [facts.get(c) for c in COLUMNS[5:]]
                    if row is None:
                        conn.execute(insert, values)
                        counts["added"] += 1
                    else:
                        conn.execute(update, [*values, row[0]])
                        counts["updated"] += 1
                        updated_ids.append(row[0])
                    pending += 1
            if pending >= BATCH:
                conn.commit()
                pending = 0
            if progress is not None:
                progress(done, len(files))
        # Rows of entries that could not be read (a folder, a file) are kept: they may be there.
        unread = {path for path, _ in errors}
        keep = tuple(path.rstrip(os.sep) + os.sep for path in unread) or ("\0",)
        prefix = root.rstrip(os.sep) + os.sep
        gone = [(id,) for path, (id, _, _) in known.items() if path not in seen
                and path not in unread and path.startswith(prefix) and not path.startswith(keep)]
        for start in range(0, len(gone), BATCH):
            conn.executemany(f"delete from {name} where id = ?", gone[start:start + BATCH])
            conn.commit()
        counts["removed"] = len(gone)
        conn.commit()
    finally:
        conn.close()
    return ScanSummary(**counts, failed=len({path for path, _ in errors}), errors=errors,
                       seconds=round(time.monotonic() - started, 3), updated_ids=tuple(updated_ids),
                       removed_ids=tuple(id for (id,) in gone))
