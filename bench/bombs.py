"""The server under decode bombs: the worst latency of unrelated requests while 8 clients
upload bombs, the server's peak memory, and how long SIGTERM takes to stop it.

    python bench/bombs.py [--seconds 20] [--clients 8] [--json]

Loopback only; the server and everything it starts run in their own process group,
killed at the end whatever happens. Bombs: a progressive-JPEG scan bomb (refused from
its markers), an 88 MP 16-bit PNG and a 49 MP float TIFF (decoded reduced, in a worker).
"""
from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def bombs() -> dict:
    from tests.test_hostile import float_tiff_bomb, png16_bomb, scan_bomb

    return {"scan.jpg": scan_bomb(), "png16.png": png16_bomb(), "float.tif": float_tiff_bomb()}


def make_db(folder: Path) -> Path:
    import numpy as np
    from PIL import Image

    db = folder / "bombs.db"
    conn = sqlite3.connect(db)
    conn.execute("create table photos (id integer primary key, image blob)")
    rng = np.random.default_rng(5)
    for n in range(20):
        out = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).resize((320, 240)).save(out, "JPEG")
        conn.execute("insert into photos (image) values (?)", (out.getvalue(),))
    conn.commit()
    conn.close()
    subprocess.run([sys.executable, "-m", "datasette", "imgsim", "index", str(db), "--table", "photos",
                    "--column", "image", "--method", "phash", "--workers", "1", "--in-place"],
                   check=True, capture_output=True)
    return db


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def group_rss(pgid: int) -> int:
    from tests.helpers import process_group

    return sum(memory["rss"] for memory in process_group(pgid).values())


def multipart(name: str, data: bytes) -> tuple[bytes, str]:
    boundary = "imgsimbench"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + \
        f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def request(port, method, path, body=None, headers=None, timeout=60):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def run(seconds: float = 20.0, clients: int = 8) -> dict:
    files = bombs()
    with tempfile.TemporaryDirectory() as tmp:
        db = make_db(Path(tmp))
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
        server = subprocess.Popen([sys.executable, "-m", "datasette", "serve", str(db), "--host",
                                   "127.0.0.1", "--port", str(port)], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        try:
            deadline = time.time() + 60
            while time.time() < deadline:
                try:
                    if request(port, "GET", "/-/versions.json", timeout=2)[0] == 200:
                        break
                except OSError:
                    time.sleep(0.2)
            else:
                raise RuntimeError("the server did not start")
            stop = threading.Event()
            latencies, statuses, peak, messages, signalled = [], {}, [0], {}, [0.0]

            def uploader(n):
                names = list(files)
                i = n
                while not stop.is_set():
                    name = names[i % len(names)]
                    i += 1
                    body, content_type = multipart(name, files[name])
                    try:
                        status, answer = request(port, "POST", "/bombs/photos/-/similar.json",
                                                 body, {"Content-Type": content_type})
                    except OSError:
                        status, answer = "error", b""
                    if stop.is_set() or signalled[0]:
                        continue  # the server is stopping: not counted
                    if status != 200 and name not in messages:
                        messages[name] = answer[:200].decode("utf-8", "replace")
                    statuses[(name, status)] = statuses.get((name, status), 0) + 1

            def prober():
                while not stop.is_set() and not signalled[0]:
                    started = time.monotonic()
                    try:
                        request(port, "GET", "/bombs.json", timeout=60)
                    except OSError:
                        pass
                    if not signalled[0]:
                        latencies.append(time.monotonic() - started)
                    time.sleep(0.05)

            def sampler():
                while not stop.is_set():
                    peak[0] = max(peak[0], group_rss(server.pid))
                    time.sleep(0.05)

            threads = [threading.Thread(target=uploader, args=(n,), daemon=True) for n in range(clients)]
            threads += [threading.Thread(target=prober, daemon=True),
                        threading.Thread(target=sampler, daemon=True)]
            for thread in threads:
                thread.start()
            time.sleep(seconds)
            # SIGTERM with uploads still in flight.
            signalled[0] = time.monotonic()
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=60)
                stopped = time.monotonic() - signalled[0]
            except subprocess.TimeoutExpired:
                stopped = None
            stop.set()
            for thread in threads:
                thread.join(timeout=5)
            time.sleep(1)
            left = group_rss(server.pid)
            if os.environ.get("BOMBS_DEBUG"):
                print(server.stdout.read().decode("utf-8", "replace")[-3000:], file=sys.stderr)
        finally:
            try:
                os.killpg(server.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            server.wait()
    latencies.sort()
    return {"clients": clients, "seconds": seconds, "probes": len(latencies),
            "worst_latency_s": round(latencies[-1], 3) if latencies else None,
            "p50_latency_s": round(latencies[len(latencies) // 2], 3) if latencies else None,
            "server_peak_rss_mb": round(peak[0] / 2 ** 20), "sigterm_exit_s":
                None if stopped is None else round(stopped, 2),
            "left_running_rss_mb": round(left / 2 ** 20),
            "refusals": messages,
            "uploads": {f"{name} {status}": count for (name, status), count in sorted(statuses.items(), key=str)}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args.seconds, args.clients)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['clients']} clients uploading bombs for {result['seconds']:g} s:")
    print(f"  unrelated requests: worst {result['worst_latency_s']} s, median "
          f"{result['p50_latency_s']} s over {result['probes']} requests")
    print(f"  server peak memory (all its processes): {result['server_peak_rss_mb']} MB")
    print(f"  SIGTERM to exit: {result['sigterm_exit_s']} s; left running: "
          f"{result['left_running_rss_mb']} MB")
    for key, count in result["uploads"].items():
        print(f"  {key}: {count}")
    for name, message in result["refusals"].items():
        print(f"  {name} refused: {message}")


if __name__ == "__main__":
    main()
