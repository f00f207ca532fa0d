"""Load test: concurrent clients against a real `datasette serve` on loopback.

    python bench/load.py [--clients 8] [--seconds 10] [--rows 100000]

Serves demo.db (demo size) and a synthetic --rows index (cnn vectors built from real
embeddings, rows pointing at a few hundred real photo files), then runs N concurrent
clients on the similar page JSON, thumbnails and upload search, and finally sends
concurrent over-limit uploads. Prints one table: requests, throughput, p50/p99
latency and errors per scenario, and the server's peak memory: private (RssAnon) and
mapped files (RssFile: shared libraries and the memory-mapped index, counted once per
connection mapping it). Bounded in time and
count; only 127.0.0.1 is contacted.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import CACHE, PHOTOS, collection, machine, percentile, photo, real_embeddings, table, variant  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MAX_REQUESTS = 20_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def jpeg(pixels, quality=85) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=quality)
    return out.getvalue()


def synthetic_db(rows: int) -> Path:
    """A photos table of `rows` file paths with a ready cnn index (cached between runs)."""
    folder = CACHE / f"load_{rows}"
    db = folder / "photos.db"
    if db.exists():
        return db
    from datasette_imgsim.store import ItemResult, Store, connect

    shutil.rmtree(folder, ignore_errors=True)
    (folder / "img").mkdir(parents=True)
    rng = np.random.default_rng(0)
    sources = [photo(name) for name in PHOTOS]
    files = []
    for i in range(300):
        name = f"img/p{i:03d}.jpg"
        (folder / name).write_bytes(jpeg(variant(sources[i % len(sources)], rng, (640, 480))))
        files.append(name)
    conn = connect(str(db))
    conn.execute("create table photos (id integer primary key, title text, path text)")
    conn.executemany("insert into photos (id, title, path) values (?, ?, ?)",
                     ((i, f"photo {i}", files[i % len(files)]) for i in range(1, rows + 1)))
    conn.commit()
    store = Store(conn)
    spec, _ = store.create_index("photos", "path", "id", str(folder), "cnn", "cosine", 1280, "float")
    pk = 1
    for block in collection(rows, real_embeddings()):
        with conn:
            store.write(spec, [ItemResult(pk + i, "synthetic", v) for i, v in enumerate(block)])
        pk += len(block)
    conn.execute("pragma journal_mode = delete")
    conn.close()
    return db


class Server:
    def __init__(self, db: Path):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "datasette", "serve", str(db), "--port", str(self.port),
             "--host", "127.0.0.1", "--setting", "num_sql_threads", "4"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.peak = {"RssAnon": 0, "RssFile": 0}
        threading.Thread(target=self._sample_memory, daemon=True).start()
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                httpx.get(self.base + "/-/versions.json", timeout=2)
                return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("datasette did not start: " + self.process.stderr.read().decode()[-2000:])

    def _sample_memory(self):
        # Private memory and mapped file pages apart: each SQL thread's connection maps
        # the index file, and those pages (the OS page cache, shared and reclaimable)
        # count in RSS once per mapping.
        while self.process.poll() is None:
            try:
                with open(f"/proc/{self.process.pid}/status") as f:
                    for line in f:
                        key = line.split(":")[0]
                        if key in self.peak:
                            self.peak[key] = max(self.peak[key], int(line.split()[1]))
            except OSError:
                return
            time.sleep(0.05)

    def peak_memory(self) -> str:
        return (f"{self.peak['RssAnon'] / 1024:.0f} MB private "
                f"+ {self.peak['RssFile'] / 1024:.0f} MB mapped files")

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)


async def scenario(base: str, clients: int, seconds: float, make_request) -> dict:
    latencies, errors, statuses = [], 0, {}
    stop_at = time.monotonic() + seconds
    count = 0

    async def client(n):
        nonlocal errors, count
        rng = random.Random(n)
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            while time.monotonic() < stop_at and count < MAX_REQUESTS:
                count += 1
                started = time.perf_counter()
                try:
                    response = await make_request(http, rng)
                    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                    if response.status_code >= 500:
                        errors += 1
                except httpx.HTTPError:
                    errors += 1
                latencies.append(time.perf_counter() - started)

    started = time.monotonic()
    await asyncio.gather(*(client(n) for n in range(clients)))
    elapsed = time.monotonic() - started
    return {"requests": len(latencies), "rps": len(latencies) / elapsed,
            "p50": percentile(latencies, 50) * 1000, "p99": percentile(latencies, 99) * 1000,
            "errors": errors, "statuses": statuses}


def run_dataset(name: str, db: Path, rows: int, clients: int, seconds: float, upload: bytes) -> list:
    server = Server(db)
    base_path = f"/{db.stem}/photos/-"
    pks = list(range(1, rows + 1))
    hot = pks[:40]  # a page's worth of thumbnails that every client opens
    oversize = os.urandom(25 * 1024 * 1024)

    async def similar(http, rng):
        return await http.get(f"{base_path}/similar/{rng.choice(pks)}.json?k=10")

    async def thumbnail(http, rng):
        return await http.get(f"{base_path}/thumbnail/{rng.choice(hot)}?size=200")

    async def upload_search(http, rng):
        return await http.post(f"{base_path}/similar.json?k=10", content=upload,
                               headers={"content-type": "image/jpeg"})

    async def too_large(http, rng):
        response = await http.post(f"{base_path}/similar.json", content=oversize,
                                   headers={"content-type": "image/jpeg"})
        assert response.status_code == 413, response.status_code
        return response

    rows_out = []
    try:
        for label, fn, duration in [("similar page JSON", similar, seconds),
                                    ("thumbnails (40 hot)", thumbnail, seconds),
                                    ("upload search", upload_search, seconds),
                                    ("25 MB uploads (over limit)", too_large, seconds / 2)]:
            result = asyncio.run(scenario(server.base, clients, duration, fn))
            rows_out.append([name, label, result["requests"], f"{result['rps']:.0f}",
                             f"{result['p50']:.1f}", f"{result['p99']:.1f}", result["errors"],
                             ", ".join(f"{k}: {v}" for k, v in sorted(result["statuses"].items()))])
        rows_out.append([name, "server peak memory", "", "", "", "", "", server.peak_memory()])
    finally:
        server.stop()
    return rows_out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    upload = jpeg(variant(photo("chelsea"), np.random.default_rng(5), (1600, 1200)))
    results = []
    demo = ROOT / "demo.db"
    if demo.exists():
        count = int(subprocess.run([sys.executable, "-c", "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from photos').fetchone()[0])", str(demo)], capture_output=True, text=True).stdout)
        results += run_dataset(f"demo.db ({count} rows)", demo, count, args.clients, args.seconds, upload)
    started = time.monotonic()
    big = synthetic_db(args.rows)
    print(f"(synthetic {args.rows:,}-row index ready in {time.monotonic() - started:.0f}s)", file=sys.stderr)
    results += run_dataset(f"{args.rows:,} rows, cnn", big, args.rows, args.clients, args.seconds, upload)
    print(f"Load test: {args.clients} concurrent clients, {args.seconds:g}s per scenario, loopback only")
    print(f"Machine: {machine()}\n")
    print(table(["data", "scenario", "requests", "req/s", "p50 ms", "p99 ms", "errors", "statuses"], results))


if __name__ == "__main__":
    main()
