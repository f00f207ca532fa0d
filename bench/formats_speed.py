"""Decode speed of HEIC, camera RAW and video, against the full decode (and JPEG),
and the copy-detection accuracy of HEIC's thumbnail path. Builds its own files.

  python bench/formats_speed.py [--quick]

- HEIC: a 12 MP (4032 x 3024) photo saved with a 512 px thumbnail (pillow-heif,
  x265), read at each method's min_size by the thumbnail path and by the full decode.
- RAW: the same photo as a 12-bit DNG (Bayer mosaic, pidng) with a full-size JPEG
  preview, against the JPEG itself (same quality), and a DNG without a preview
  (LibRaw's half-size demosaic).
- Video: one minute of 1080p at 30 fps (OpenCV, mp4v): one representative frame.
- Accuracy: 20 photos as HEIC (2048 px; 512 px thumbnails, then iPhone-like 320 px
  ones): for each method, recall@1
  of finding the JPEG original among all 20 and the mean distance to it, thumbnail
  path vs full decode, and the worst margin (distance to the nearest wrong photo minus
  distance to the original, over the 20).
All figures come from one run; ratios compare figures measured side by side.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent))

from common import machine, photo, table  # noqa: E402
from copydetect import SKIMAGE_PHOTOS, _skimage  # noqa: E402

from datasette_imgsim import formats  # noqa: E402
from datasette_imgsim.formats import heif  # noqa: E402
from datasette_imgsim.images import load_image, open_image  # noqa: E402
from tests import format_files as ff  # noqa: E402

METHODS = ["phash", "hog", "histogram", "cnn"]


def min_sizes() -> dict:
    from datasette_imgsim.plugins import get_method

    return {name: get_method(name).min_size for name in METHODS}


def seconds(fn, reps: int) -> float:
    return paired(fn, None, reps)[0]


def paired(fa, fb, reps: int, b_reps: int = 0) -> tuple:
    """Median seconds of fa and fb, run alternately so that a busy machine slows both."""
    times: tuple = ([], [])
    for fn in (fa, fb):  # warm
        if fn:
            fn()
    for i in range(reps):
        for fn, out, n in ((fa, times[0], reps), (fb, times[1], b_reps or reps)):
            if fn and i < n:
                start = time.perf_counter()
                fn()
                out.append(time.perf_counter() - start)
    return tuple(statistics.median(t) if t else 0.0 for t in times)


class full_decode:
    """HEIF thumbnails off: the decode as it was before this path existed."""

    def __enter__(self):
        self.saved, heif.THUMBNAIL_MAX_MIN_SIZE = heif.THUMBNAIL_MAX_MIN_SIZE, 0

    def __exit__(self, *exc):
        heif.THUMBNAIL_MAX_MIN_SIZE = self.saved


def big_photo() -> np.ndarray:
    return np.asarray(Image.fromarray(photo("astronaut")).resize((4032, 3024), Image.BICUBIC))


def heic_speed(pixels, sizes, reps) -> list:
    start = time.perf_counter()
    data = ff.heic_bytes(pixels, [512])
    print(f"HEIC 4032x3024 with a 512 px thumbnail: {len(data) / 1e6:.1f} MB "
          f"(encoded in {time.perf_counter() - start:.1f} s)", flush=True)
    rows = []
    for name, size in sizes.items():
        path = open_image(data, size).info[formats.PATH_KEY]

        def full_read(size=size):
            with full_decode():
                open_image(data, size)

        fast, full = paired(lambda: open_image(data, size), full_read, reps, max(2, reps // 2))
        rows.append([f"HEIC 12 MP, {name} ({size} px)", path, f"{fast * 1000:.0f} ms",
                     f"{full * 1000:.0f} ms", f"{full / fast:.1f}x"])
    return rows


def raw_speed(pixels, sizes, reps) -> list:
    start = time.perf_counter()
    jpeg = ff.jpeg(pixels, 90)
    with_preview = ff.dng_bytes(pixels, 1, preview_data=jpeg)
    no_preview = ff.dng_bytes(pixels, 1, None)
    print(f"DNG 4032x3024 12-bit: {len(with_preview) / 1e6:.1f} MB with its full-size preview "
          f"(built in {time.perf_counter() - start:.1f} s)", flush=True)
    rows = []
    for name, size in list(sizes.items()) + [("full size", 0)]:
        path = open_image(with_preview, size).info[formats.PATH_KEY]
        raw, plain = paired(lambda: open_image(with_preview, size), lambda: open_image(jpeg, size),
                            reps * 2)
        rows.append([f"DNG 12 MP, {name} ({size} px)", path, f"{raw * 1000:.0f} ms",
                     f"JPEG {plain * 1000:.0f} ms", f"{raw / plain:.2f}x the JPEG's time"])
    demosaic, plain = paired(lambda: open_image(no_preview, 256), lambda: open_image(jpeg, 256),
                             reps, max(2, reps // 2))
    rows.append(["DNG 12 MP without preview, cnn (256 px)",
                 open_image(no_preview, 256).info[formats.PATH_KEY], f"{demosaic * 1000:.0f} ms",
                 f"JPEG {plain * 1000:.0f} ms", f"{demosaic / plain:.2f}x the JPEG's time"])
    return rows


def video_speed(seconds_long: int) -> list:
    import cv2

    folder = Path(tempfile.mkdtemp(prefix="imgsim-bench-"))
    path = folder / "minute.mp4"
    start = time.perf_counter()
    source = cv2.resize(photo("chelsea")[..., ::-1], (2240, 1260))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (1920, 1080))
    for i in range(30 * seconds_long):
        x, y = (i * 3) % 320, (i // 2) % 180
        writer.write(np.ascontiguousarray(source[y:y + 1080, x:x + 1920]))
    writer.release()
    print(f"video {seconds_long} s 1080p30 mp4v: {path.stat().st_size / 1e6:.0f} MB "
          f"(written in {time.perf_counter() - start:.1f} s)", flush=True)
    rows = []
    for label, source_ in [("path", path), ("bytes (temporary file)", path.read_bytes())]:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            load_image(source_, 256)
            times.append(time.perf_counter() - start)
        rows.append([f"video {seconds_long} s 1080p, from {label}", "frame",
                     f"{statistics.median(times) * 1000:.0f} ms", "", "target < 500 ms"])
    path.unlink()
    folder.rmdir()
    return rows


def accuracy(sizes, thumbnail: int) -> list:
    from datasette_imgsim.plugins import get_method

    names = SKIMAGE_PHOTOS[:17]
    base = [_skimage(n) for n in names]
    base += [np.ascontiguousarray(base[i][h // 5:-h // 5, w // 5:-w // 5])
             for i, (h, w) in [(j, base[j].shape[:2]) for j in (0, 2, 7)]]  # three crops: 20
    originals, copies = [], []
    for pixels in base:
        img = Image.fromarray(pixels)
        scale = 2048 / max(img.size)
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.BICUBIC)
        originals.append(ff.jpeg(np.asarray(img)))
        copies.append(ff.heic_bytes(np.asarray(img), [thumbnail]))
    rows = []
    for name in METHODS:
        m, size = get_method(name), sizes[name]

        def vectors(datas):
            pixels = [load_image(d, size) for d in datas]
            return m.vectors_for(m.extract(pixels).vectors, m.metric)

        db = vectors(originals)
        results = {}
        paths_before = formats.paths[("heif", "thumbnail")]
        for label in ("thumbnail", "full"):
            if label == "full":
                with full_decode():
                    q = vectors(copies)
            else:
                q = vectors(copies)
            if m.metric == "hamming":
                d = np.array([[np.unpackbits(a ^ b).sum() for b in db] for a in q], dtype=float)
            else:
                qn = q / (np.linalg.norm(q, axis=1, keepdims=True) + 1e-12)
                dn = db / (np.linalg.norm(db, axis=1, keepdims=True) + 1e-12)
                d = 1 - qn @ dn.T if m.metric == "cosine" else \
                    np.linalg.norm(q[:, None] - db[None], axis=2)
            recall = float(np.mean(np.argmin(d, axis=1) == np.arange(len(base))))
            others = d + np.diag(np.full(len(base), np.inf))
            margin = float(np.min(others.min(axis=1) - np.diag(d)))  # worst gap to a wrong photo
            results[label] = (recall, float(np.mean(np.diag(d))), margin)
        used = formats.paths[("heif", "thumbnail")] - paths_before
        (rt, dt, mt), (rf, df, mf) = results["thumbnail"], results["full"]
        unit = "bits" if m.metric == "hamming" else m.metric
        rows.append([f"{name} ({size} px)", f"thumbnail for {used} of {len(base)}",
                     f"{rt:.2f}", f"{rf:.2f}", f"{dt:.4g} {unit}", f"{df:.4g} {unit}",
                     f"{mt:.4g}", f"{mf:.4g}"])
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, 20 s video")
    parser.add_argument("--reps", type=int, default=0)
    args = parser.parse_args()
    reps = args.reps or (3 if args.quick else 7)
    print(machine(), flush=True)
    sizes = min_sizes()
    pixels = big_photo()
    speed = heic_speed(pixels, sizes, reps) + raw_speed(pixels, sizes, reps)
    speed += video_speed(20 if args.quick else 60)
    print()
    print(table(["file, needed by", "path", "time", "full decode / JPEG", "ratio"], speed))
    print()
    for thumbnail in (512, 320):
        print(f"\nHEIC copies of 20 photos (2048 px, {thumbnail} px thumbnail) vs their JPEG originals:")
        print(table(["method", "path", "recall@1 thumbnail path", "recall@1 full decode",
                     "mean distance, thumbnail path", "mean distance, full",
                     "worst margin, thumbnail path", "worst margin, full"],
                    accuracy(sizes, thumbnail)))
    print("\ndecode paths taken:", dict(formats.paths))


if __name__ == "__main__":
    main()
