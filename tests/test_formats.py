"""Camera RAW (DNG built from Bayer data), HEIC with thumbnails and videos: read upright,
by the fast path where the file allows, found by their JPEG originals; bad files fail
with one readable line."""
import time

import numpy as np
import pytest
from PIL import Image

from datasette_imgsim import formats, images
from datasette_imgsim.images import ImageError, image_size, load_image, media_kind, open_image

from . import format_files as ff
from .helpers import jpeg_bytes


@pytest.fixture(scope="module")
def upright(photos):
    """An asymmetric landscape photo: any wrong turn or mirror shows in the pixels."""
    return np.ascontiguousarray(photos["coffee"])  # 400 x 600


def mean_diff(img, pixels) -> float:
    ref = np.asarray(Image.fromarray(pixels).resize(img.size, Image.BILINEAR), dtype=float)
    return float(np.abs(np.asarray(img, dtype=float) - ref).mean())


def assert_upright(img, pixels, tolerance=14):
    h, w = pixels.shape[:2]
    assert (img.width > img.height) == (w > h), f"turned: {img.size} for {w}x{h}"
    assert img.width / img.height == pytest.approx(w / h, rel=0.03)
    assert mean_diff(img, pixels) < tolerance
    # ...and nearer the original than to its mirror images.
    assert mean_diff(img, pixels) < mean_diff(img, np.ascontiguousarray(pixels[::-1, ::-1]))


def nearest(method_name, query, candidates) -> int:
    from datasette_imgsim.plugins import get_method

    m = get_method(method_name)

    def vectors(pixels_list):
        return m.vectors_for(m.extract(pixels_list).vectors, m.metric)

    q, c = vectors([query]), vectors(candidates)
    if m.metric == "hamming":
        d = np.unpackbits(np.bitwise_xor(c, q), axis=1).sum(axis=1)
    else:
        d = 1 - (c @ q[0]) / (np.linalg.norm(c, axis=1) * np.linalg.norm(q[0]) + 1e-12)
    return int(np.argmin(d))


def jpeg_originals(photos, names):
    return [load_image(jpeg_bytes(photos[n]), 256) for n in names]


NAMES = ["astronaut", "chelsea", "coffee", "rocket", "motorcycle", "hubble"]


# --- RAW ----------------------------------------------------------------------------

@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
@pytest.mark.parametrize("preview, path", [(0, "preview"), (None, "demosaic")])
def test_dng_is_upright_by_either_path(upright, orientation, preview, path):
    data = ff.dng_bytes(upright, orientation, preview)
    assert formats.sniff(data) == "raw" and media_kind(data) == "raw"
    before = formats.paths[("raw", path)]
    img = open_image(data, 64)
    assert img.info[formats.KIND_KEY] == "raw" and img.info[formats.PATH_KEY] == path
    assert formats.paths[("raw", path)] == before + 1
    assert_upright(img, upright)
    w, h = image_size(data)
    assert (w > h) == (upright.shape[1] > upright.shape[0])


def test_preview_already_upright_is_not_turned_again(upright):
    # Some converters store the preview upright: its aspect is then the turned sensor's.
    sensor = np.rot90(upright, 1)
    data = ff.dng_bytes(upright, 6, preview_data=ff.jpeg(upright))
    assert sensor.shape[0] != upright.shape[0]
    assert_upright(open_image(data, 64), upright)


def test_small_preview_falls_back_to_demosaic(upright):
    data = ff.dng_bytes(upright, 1, preview=160)  # 160 x 107: too small for 128 or 256
    assert open_image(data, 64).info[formats.PATH_KEY] == "preview"
    img = open_image(data, 128)
    assert img.info[formats.PATH_KEY] == "demosaic" and min(img.size) >= 128
    # Full size (min_size 0): the preview must at least match the half-size demosaic.
    assert open_image(data).info[formats.PATH_KEY] == "demosaic"
    assert open_image(ff.dng_bytes(upright, 1, preview=0)).info[formats.PATH_KEY] == "preview"


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_preview_falls_back_to_demosaic(upright, damage):
    good = ff.jpeg(upright)
    bad = good[: len(good) // 3] if damage == "truncated" else b"\xff\xd8\xff\xe0" + bytes(5000)
    img = open_image(ff.dng_bytes(upright, 1, preview_data=bad), 64)
    assert img.info[formats.PATH_KEY] == "demosaic"
    assert_upright(img, upright)


def test_16_bit_dng(upright):
    img = open_image(ff.dng_bytes(upright, 1, None, bits=16), 64)
    assert_upright(img, upright)


@pytest.mark.parametrize("cut", [0.5, 0.02])
def test_truncated_raw_is_a_readable_error(upright, cut):
    data = ff.dng_bytes(upright, 1, None)
    with pytest.raises(ImageError) as e:
        open_image(data[: int(len(data) * cut)], 64)
    assert "\n" not in str(e.value) and ("RAW" in str(e.value) or "image" in str(e.value))


def test_raw_over_the_pixel_limit_is_refused_before_demosaic(upright, monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 10_000)
    with pytest.raises(ImageError, match="RAW too large"):
        open_image(ff.dng_bytes(upright, 1, None), 64)


@pytest.mark.parametrize("preview", [0, None])
def test_jpeg_original_finds_the_dng_first(photos, preview):
    originals = jpeg_originals(photos, NAMES)
    for name in ["chelsea", "rocket"]:
        raw = load_image(ff.dng_bytes(photos[name], 1, preview), 256)
        for method in ["phash", "cnn"]:
            assert NAMES[nearest(method, raw, originals)] == name, (name, method, preview)


def test_tiff_is_not_taken_for_raw(photos):
    import io

    out = io.BytesIO()
    Image.fromarray(photos["coffee"]).save(out, "TIFF")
    assert formats.sniff(out.getvalue()) == "image"
    assert open_image(out.getvalue()).info[formats.KIND_KEY] == "image"


# --- HEIC ---------------------------------------------------------------------------

@pytest.mark.parametrize("orientation", [1, 6, 8])
def test_heic_thumbnail_path_is_upright(upright, orientation):
    data = ff.heic_bytes(upright, [256], orientation)
    assert media_kind(data) == "heif"
    small = open_image(data, 64)
    assert small.info[formats.PATH_KEY] == "thumbnail" and small.info[formats.KIND_KEY] == "heif"
    assert max(small.size) <= 256
    assert_upright(small, upright)
    full = open_image(data, 256)  # the 256 x 171 thumbnail is too small: full decode
    assert full.info[formats.PATH_KEY] == "full" and min(full.size) >= 256
    assert_upright(full, upright)
    assert image_size(data) == (upright.shape[1], upright.shape[0])


def test_heic_with_broken_thumbnail_decodes_in_full(upright):
    data = ff.break_heic_thumbnail(ff.heic_bytes(upright, [256]))
    img = open_image(data, 64)
    assert img.info[formats.PATH_KEY] == "full"
    assert_upright(img, upright)


def test_jpeg_original_finds_the_heic_first(photos):
    originals = jpeg_originals(photos, NAMES)
    for name in ["astronaut", "motorcycle"]:
        data = ff.heic_bytes(photos[name], [256])
        for method in ["phash", "cnn"]:
            m_size = 64 if method == "phash" else 256
            pixels = load_image(data, m_size)
            assert NAMES[nearest(method, pixels, originals)] == name, (name, method)


# --- Video --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def video(tmp_path_factory, photos):
    """4 s at 10 fps: coffee in the first 10 %, then black, then chelsea."""
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    black = np.zeros_like(photos["chelsea"])
    ff.video_file(path, [(photos["coffee"], 4), (black, 3), (photos["chelsea"], 33)])
    return path


def test_video_frame_past_ten_percent_skipping_black(video, photos):
    assert media_kind(video) == "video"
    start = time.monotonic()
    img = open_image(video, 128)
    assert time.monotonic() - start < 2
    assert img.info[formats.KIND_KEY] == "video" and img.info[formats.PATH_KEY] == "frame"
    assert mean_diff(img, photos["chelsea"]) < 25
    assert mean_diff(img, photos["chelsea"]) < mean_diff(img, photos["coffee"])
    pixels = load_image(video, 256)
    assert NAMES[nearest("phash", pixels, jpeg_originals(photos, NAMES))] == "chelsea"
    assert NAMES[nearest("cnn", pixels, jpeg_originals(photos, NAMES))] == "chelsea"


def test_rotated_video_frame_is_upright(tmp_path, upright):
    path = tmp_path / "portrait.mp4"
    ff.video_file(path, [(np.rot90(upright, 1), 12)])  # stored turned, as phones do
    path.write_bytes(ff.rotate_mp4(path.read_bytes()))
    assert_upright(open_image(path, 64), upright, tolerance=25)


def test_video_from_bytes_leaves_no_temporary_file(video, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    img = open_image(video.read_bytes(), 64)
    assert img.info[formats.KIND_KEY] == "video"
    assert list(tmp_path.iterdir()) == []
    assert image_size(video.read_bytes()) == (600, 400)  # coffee sets the frame size


@pytest.mark.parametrize("fourcc, suffix", [("MJPG", ".avi"), ("XVID", ".avi"), ("mp4v", ".mov"),
                                           ("mp4v", ".m4v"), ("mp4v", ".3gp"), ("mp4v", ".mkv"),
                                           ("VP80", ".webm")])
def test_other_containers(tmp_path, photos, fourcc, suffix):
    path = tmp_path / f"clip{suffix}"
    try:
        ff.video_file(path, [(photos["rocket"], 12)], fourcc=fourcc)
    except AssertionError:
        pytest.skip(f"this OpenCV has no {fourcc} encoder")
    assert media_kind(path) == "video" and media_kind(path.read_bytes()) == "video"
    assert mean_diff(open_image(path, 64), photos["rocket"]) < 25


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00\x00\x00\x08moov", "video"),
    (b"\x00\x00\x00\x18ftypisom\x00\x00\x00\x00isommp41" + bytes(range(256)) * 64, "video"),
    (b"\x1a\x45\xdf\xa3" + bytes(3000), "video"),
    (bytes(range(256)) * 40, "not a recognised image format"),
])
def test_bad_videos_are_readable_errors(tmp_path, data, message):
    path = tmp_path / "bad.mp4"
    path.write_bytes(data)
    start = time.monotonic()
    for source in (path, data):
        with pytest.raises(ImageError, match=message) as e:
            load_image(source, 64)
        assert "\n" not in str(e.value)
    assert time.monotonic() - start < 10


def test_truncated_video_gives_a_frame_or_a_readable_error(video, tmp_path):
    data = video.read_bytes()
    for cut in (0.5, 0.05):
        path = tmp_path / f"cut{cut}.mp4"
        path.write_bytes(data[: int(len(data) * cut)])
        try:
            img = open_image(path, 64)
            assert img.info[formats.KIND_KEY] == "video"
        except ImageError as e:
            assert "\n" not in str(e)


# --- Every kind, through the thumbnail maker ------------------------------------------

def test_thumbnails_for_every_kind(upright, video):
    from datasette_imgsim.thumbnails import make_thumbnail

    for data in [ff.dng_bytes(upright, 6, 0), ff.dng_bytes(upright, 8, None),
                 ff.heic_bytes(upright, [256]), video.read_bytes()]:
        thumb = Image.open(__import__("io").BytesIO(make_thumbnail(data, 128)))
        assert max(thumb.size) == 128 and thumb.format == "JPEG"
        if media_kind(data) != "video":
            assert_upright(thumb, upright, tolerance=16)


def test_avif_is_read_as_heif(upright):
    import io

    out = io.BytesIO()
    try:
        Image.fromarray(upright).save(out, "AVIF", quality=80)
    except (KeyError, OSError, ValueError):
        pytest.skip("this Pillow cannot write AVIF")
    data = out.getvalue()
    assert media_kind(data) == "heif"
    img = open_image(data, 64)
    assert img.info[formats.KIND_KEY] == "heif"
    assert_upright(img, upright)


def test_raw_without_a_known_signature_is_tried_with_libraw(upright, monkeypatch):
    # A RAW format the signatures do not name reaches LibRaw once Pillow gives up.
    data = ff.dng_bytes(upright, 1, None)
    monkeypatch.setattr(formats, "tiff_is_raw", lambda head: False)
    assert formats.sniff(data) == "image"
    img = open_image(data, 64)
    assert img.info[formats.KIND_KEY] == "raw"
    assert_upright(img, upright)


# --- a mixed library, end to end ---------------------------------------------------

@pytest.mark.asyncio
async def test_a_mixed_folder_indexes_and_serves_every_kind(tmp_path, photos):
    """JPEG, HEIC, DNG and MP4 index without errors, bad files get one readable line
    each, every good row has a thumbnail, and a JPEG original finds its other kinds."""
    import sqlite3

    from datasette.app import Datasette

    from .helpers import index_photos

    folder = tmp_path / "library"
    folder.mkdir()
    files = {
        "chelsea.jpg": jpeg_bytes(photos["chelsea"]),
        "coffee.heic": ff.heic_bytes(photos["coffee"], thumbnails=[256]),
        "rocket.dng": ff.dng_bytes(photos["rocket"], preview=0),
        "astronaut.dng": ff.dng_bytes(photos["astronaut"]),
        "broken.dng": ff.dng_bytes(photos["hubble"])[:5000],
        "empty.mp4": b"",
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    ff.video_file(folder / "motorcycle.mp4", [(photos["motorcycle"], 20)])
    db = tmp_path / "photos.db"
    conn = sqlite3.connect(db)
    conn.execute("create table photos (id integer primary key, path text)")
    names = sorted(p.name for p in folder.iterdir())
    conn.executemany("insert into photos (path) values (?)", [(f"library/{n}",) for n in names])
    conn.commit()
    conn.close()
    index_photos(db, "phash", "cnn")
    errors = dict(sqlite3.connect(db).execute(
        "select p.path, e.error from _imgsim_errors e join photos p on p.id = e.pk"))
    assert set(errors) == {"library/broken.dng", "library/empty.mp4"}
    assert all(message and "\n" not in message for message in errors.values())
    ds = Datasette([str(db)])
    ids = {n: i for i, n in enumerate(names, start=1)}
    for name in set(names) - {"broken.dng", "empty.mp4"}:
        response = await ds.client.get(f"/photos/photos/-/thumbnail/{ids[name]}?size=128")
        assert response.status_code == 200, (name, response.text[:200])
        assert Image.open(__import__("io").BytesIO(response.content)).size[0] <= 128
    # The JPEG of each photo finds its HEIC, DNG or video row first.
    for original, row in [("coffee", "coffee.heic"), ("rocket", "rocket.dng"),
                          ("astronaut", "astronaut.dng"), ("motorcycle", "motorcycle.mp4")]:
        response = await ds.client.post("/photos/photos/-/similar.json", content=jpeg_bytes(photos[original]))
        assert response.json()["results"][0]["pk"] == ids[row], original
