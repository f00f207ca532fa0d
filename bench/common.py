"""Shared by the speed benchmarks: real photos at camera size, real CNN embeddings,
timing helpers and the one table both scripts print.

Everything is made at bench time from scikit-image's bundled photos (no downloads):
12 MP JPEGs are upscaled, randomly cropped, flipped and re-toned versions of them,
so they decode like camera JPEGs (real content, quality 90), not like flat test cards.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

# The same real photos the tests use, made by one helper.
import sys  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.helpers import photo  # noqa: E402,F401

CACHE = Path(os.environ.get("IMGSIM_BENCH_CACHE", "/tmp/imgsim-bench"))
PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina",
          "immunohistochemistry", "colorwheel", "motorcycle", "camera", "coins", "horse",
          "brick", "grass", "gravel", "moon"]


def variant(pixels: np.ndarray, rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A random crop (50-100% of each side), maybe mirrored and re-toned, resized to size (w, h)."""
    import cv2

    h, w = pixels.shape[:2]
    ch, cw = int(h * rng.uniform(0.5, 1)), int(w * rng.uniform(0.5, 1))
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    out = pixels[y:y + ch, x:x + cw]
    if rng.random() < 0.5:
        out = out[:, ::-1]
    out = cv2.resize(np.ascontiguousarray(out), size, interpolation=cv2.INTER_CUBIC)
    gain = rng.uniform(0.8, 1.2, size=3)
    return np.clip(out * gain + rng.normal(0, 2, out.shape), 0, 255).astype(np.uint8)


def make_photos(folder: Path, n: int, size=(4000, 3000), quality: int = 90, seed: int = 0) -> list[Path]:
    """n camera-sized JPEGs in folder (reused when already there)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sources = [photo(name) for name in PHOTOS]
    paths = []
    for i in range(n):
        path = folder / f"photo{i:05d}_{size[0]}x{size[1]}.jpg"
        if not path.exists():
            pixels = variant(sources[i % len(sources)], rng, size)
            Image.fromarray(pixels).save(path, "JPEG", quality=quality)
        paths.append(path)
    return paths


def real_embeddings(n: int = 1600, seed: int = 1) -> np.ndarray:
    """CNN embeddings (unit length, non-negative) of n random crops of the bundled
    photos, computed once and cached: the seeds of the synthetic collections."""
    path = CACHE / f"cnn_embeddings_{n}_{seed}.npy"
    if path.exists():
        return np.load(path)
    from datasette_imgsim.methods.cnn import cnn_method

    method = cnn_method()
    rng = np.random.default_rng(seed)
    sources = [photo(name) for name in PHOTOS]
    vectors = []
    for start in range(0, n, 32):
        batch = [variant(sources[rng.integers(len(sources))], rng, (320, 256))
                 for _ in range(min(32, n - start))]
        vectors.append(method.vectors_for(method.extract(batch).vectors, "cosine"))
    out = np.concatenate(vectors)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, out)
    return out


def collection(n: int, seeds: np.ndarray, seed: int = 2, block: int = 65536) -> Iterable[np.ndarray]:
    """n CNN-like vectors in blocks: real embeddings plus noise at two scales (an
    event, then near-identical shots in it), clipped at 0 as after ReLU6, unit length."""
    rng = np.random.default_rng(seed)
    scale = seeds.std(axis=0)
    for start in range(0, n, block):
        m = min(block, n - start)
        events = seeds[rng.integers(len(seeds), size=(m + 9) // 10)]
        events = np.clip(events + 0.6 * scale * rng.standard_normal(events.shape, np.float32), 0, None)
        x = np.repeat(events, 10, axis=0)[:m]
        x = np.clip(x + 0.3 * scale * rng.standard_normal(x.shape, np.float32), 0, None)
        yield (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def percentile(values: list[float], p: float) -> float:
    return float(np.percentile(values, p))


def timed(fn: Callable, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def machine() -> str:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        with open("/proc/meminfo") as f:
            mem = int(next(line.split()[1] for line in f if line.startswith("MemTotal"))) / 2**20
    except (OSError, StopIteration):
        mem = 0
    import sqlite_vec

    return (f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}, numpy {np.__version__}, "
            f"sqlite-vec {sqlite_vec.__version__}")


def table(headers: list[str], rows: list[list]) -> str:
    """A Markdown table, ready for the README."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def median(values) -> float:
    return statistics.median(values)
