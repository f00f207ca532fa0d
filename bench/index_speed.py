"""Indexing throughput on camera-sized JPEGs: the plugin against the naive pipeline.

    python bench/index_speed.py [--photos 48] [--rows 192] [--naive 16] [--workers 2]

Makes --photos 12 MP JPEGs (4000x3000, quality 90) from scikit-image's photos
(cached under $IMGSIM_BENCH_CACHE, default /tmp/imgsim-bench), then for each method,
and for all four together, times in the same run:

- naive: the classic tutorial pipeline, one image at a time in one process:
  cv2.imread of the full image, then the feature (for the four methods together,
  each method's script reads the image again), on the first --naive photos;
- plugin: `datasette imgsim index` over a table of the photos' paths (reduced
  decode once per image for all methods, worker processes, batched writes), in a
  fresh database of --rows rows (the photos listed repeatedly, so that the run is
  long enough for pool and model start-up to be a small part of it, as in a real
  library; the naive loop reads the same files, equally from the OS cache); its
  images/second is the one the command itself reports, start-up included.

It prints images/second, the speed-up, and the peak resident memory of the largest
process of each plugin run; the four-method run is repeated on a table 4x as long
(the same files, listed four times) to show memory does not grow with the table.
"""
from __future__ import annotations

import argparse
import json
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import CACHE, machine, make_photos, table  # noqa: E402

METHODS = ["histogram", "phash", "hog", "cnn"]


# --- the naive pipeline, as tutorials write it --------------------------------------------

def naive_histogram(path):
    import cv2

    image = cv2.imread(str(path))
    hist = cv2.calcHist([image], [0, 1, 2], None, [8, 8, 8], [0, 256, 0, 256, 0, 256])
    return cv2.normalize(hist, hist).flatten()


def naive_phash(path):
    import cv2

    image = cv2.imread(str(path))
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    low = cv2.dct(cv2.resize(grey, (32, 32)).astype(np.float32))[:8, :8]
    return low > np.median(low)


def naive_hog(path):
    import cv2

    image = cv2.imread(str(path))
    grey = cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), (64, 64))
    return cv2.HOGDescriptor((64, 64), (16, 16), (8, 8), (8, 8), 9).compute(grey)


def naive_cnn(path):
    import cv2

    from datasette_imgsim.methods.cnn.runtime import get_model

    image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    h, w = image.shape[:2]
    scale = 256 / min(h, w)
    image = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    return get_model().run([image])


NAIVE = {"histogram": naive_histogram, "phash": naive_phash, "hog": naive_hog, "cnn": naive_cnn}


def naive_rate(methods: list[str], paths: list[Path]) -> float:
    for name in methods:  # warm up: model load, first-call costs
        NAIVE[name](paths[0])
    started = time.perf_counter()
    for path in paths:
        for name in methods:
            NAIVE[name](path)
    return len(paths) / (time.perf_counter() - started)


# --- the plugin ------------------------------------------------------------------------------

def make_db(path: Path, photos: list[Path], repeat: int = 1) -> None:
    if path.exists():
        path.unlink()
    conn = sqlite3.connect(path)
    conn.execute("create table photos (id integer primary key, path text)")
    conn.executemany("insert into photos (path) values (?)",
                     [(str(p),) for _ in range(repeat) for p in photos])
    conn.commit()
    conn.close()


def plugin_run(db: Path, methods: list[str], workers: int) -> dict:
    """Index in a child process; returns its images/s and the peak RSS of its largest process."""
    command = [sys.executable, "-m", "datasette", "imgsim", "index", str(db), "--table", "photos",
               "--column", "path", "--workers", str(workers)]
    for method in methods:
        command += ["--method", method]
    child = (
        "import json, resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "wall = time.perf_counter() - t\n"
        "print(json.dumps({'rc': p.returncode, 'out': p.stdout + p.stderr, 'wall': wall,\n"
        "  'rss': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))\n"
    )
    out = subprocess.run([sys.executable, "-c", child] + command, capture_output=True, text=True)
    result = json.loads(out.stdout)
    if result["rc"] != 0:
        raise RuntimeError(result["out"][-2000:])
    match = re.search(r"([0-9.]+) images/s", result["out"])
    indexed = re.search(r"(\d+) indexed", result["out"])
    return {"rate": float(match.group(1)), "wall": result["wall"], "rss_mb": result["rss"] / 1024,
            "indexed": int(indexed.group(1))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=48, help="12 MP JPEGs to index")
    parser.add_argument("--rows", type=int, default=192, help="rows in the indexed table")
    parser.add_argument("--naive", type=int, default=16, help="of which the naive pipeline reads")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    started = time.monotonic()
    print(f"making {args.photos} 12 MP JPEGs in {CACHE / 'photos'} ...", file=sys.stderr)
    photos = make_photos(CACHE / "photos", args.photos)
    megabytes = sum(p.stat().st_size for p in photos) / len(photos) / 1e6
    db = CACHE / "index_bench.db"
    rows = []
    for methods in [[m] for m in METHODS] + [METHODS]:
        label = " + ".join(methods)
        print(f"{label}: naive ...", file=sys.stderr)
        naive = naive_rate(methods, photos[:args.naive])
        print(f"{label}: plugin ...", file=sys.stderr)
        repeat = max(1, args.rows // len(photos))
        make_db(db, photos, repeat)
        ours = plugin_run(db, methods, args.workers)
        assert ours["indexed"] == len(photos) * repeat, ours
        rows.append([label, f"{naive:.1f}", f"{ours['rate']:.1f}", f"{ours['rate'] / naive:.1f}x",
                     f"{ours['rss_mb']:.0f} MB"])
    make_db(db, photos, repeat=4 * max(1, args.rows // len(photos)))
    ours = plugin_run(db, METHODS, args.workers)
    rows.append([f"{' + '.join(METHODS)}, table 4x as long", "", f"{ours['rate']:.1f}", "",
                 f"{ours['rss_mb']:.0f} MB"])
    db.unlink()

    print(f"\nMachine: {machine()}")
    print(f"Command: python bench/index_speed.py --photos {args.photos} --rows {args.rows} --naive {args.naive} "
          f"--workers {args.workers}")
    print(f"Photos: {len(photos)} JPEGs of 4000x3000, quality 90, {megabytes:.1f} MB each\n")
    print(table(["methods", "naive img/s", "plugin img/s", "speed-up", "peak RSS (largest process)"], rows))
    print(f"\n({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
