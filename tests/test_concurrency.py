"""Serving while indexing: readers never see half a batch, and nobody gets 'database is locked'."""
import asyncio
import json
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
from datasette.app import Datasette

from datasette_imgsim.store import connect

from .helpers import jpeg_bytes

ROWS = 1200


@pytest.fixture
def big_db(tmp_path, photos):
    db = tmp_path / "big.db"
    conn = sqlite3.connect(db)
    conn.execute("create table photos (id integer primary key, image blob)")
    rng = np.random.default_rng(3)
    base = [np.asarray(p[::4, ::4]) for p in photos.values()]
    for n in range(ROWS):
        pixels = base[n % len(base)]
        noisy = np.clip(pixels.astype(int) + rng.integers(-20, 20, pixels.shape), 0, 255).astype(np.uint8)
        conn.execute("insert into photos (image) values (?)", (jpeg_bytes(noisy, quality=70),))
    conn.commit()
    conn.close()
    return db


SNAPSHOT_SQL = """
        select
          (select count(*) from _imgsim_items it join _imgsim_indexes i on i.id = it.index_id
            where i.method = 'phash') as phash_items,
          (select count(*) from _imgsim_photos_phash) as phash_vectors,
          (select count(*) from _imgsim_items it join _imgsim_indexes i on i.id = it.index_id
            where i.method = 'histogram') as histogram_items,
          (select count(*) from _imgsim_photos_histogram) as histogram_vectors
"""


def snapshot(index_file):
    """Index counts read in one query, so from one snapshot: items and vectors of both
    indexes. None before the indexer has created the tables."""
    if not index_file.exists():
        return None
    conn = connect(str(index_file), readonly=True)
    try:
        return dict(zip(["phash_items", "phash_vectors", "histogram_items", "histogram_vectors"],
                        conn.execute(SNAPSHOT_SQL).fetchone()))
    except Exception as e:
        assert "no such table" in str(e), e
        return None
    finally:
        conn.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("sidecar", [False, True])
async def test_queries_while_indexing(big_db, tmp_path, sidecar):
    command = [sys.executable, "-m", "datasette", "imgsim", "index", str(big_db), "--table", "photos",
               "--column", "image", "--method", "phash", "--method", "histogram", "--workers", "2"]
    command += ["--index-db", str(tmp_path / "big-imgsim.db")] if sidecar else ["--in-place"]
    indexer = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ds = Datasette([str(big_db)])
    seen_counts, errors, similar_calls = set(), [], 0
    deadline = time.time() + 240
    index_file = tmp_path / "big-imgsim.db" if sidecar else big_db
    sql = {"sql": "select similar_images('photos', 1, 10, 'phash') as r", "_shape": "array"}
    while time.time() < deadline:
        finished = indexer.poll() is not None
        # A separate reader, as Datasette's own connections are, sees whole batches only.
        row = snapshot(index_file)
        if row is not None:
            assert row["phash_items"] == row["phash_vectors"] == row["histogram_items"] == row["histogram_vectors"], row
            seen_counts.add(row["phash_items"])
        # Chunks finish out of order, but at most a few dozen rows run ahead of row 1.
        if row is not None and row["phash_items"] > 100:
            similar = await ds.client.get("/big.json", params=sql, follow_redirects=True)
            if similar.status_code != 200:
                errors.append(similar.text)
            else:
                assert len(json.loads(similar.json()[0]["r"])) == 10
                similar_calls += 1
        if finished:
            break
        await asyncio.sleep(0.02)
    stdout, stderr = indexer.communicate(timeout=60)
    assert indexer.returncode == 0, stderr
    assert f"{ROWS} indexed" in stdout
    assert errors == []
    assert "locked" not in stderr
    # Readers saw the index grow in several whole batches while it was written.
    assert len(seen_counts) >= 3 and max(seen_counts) == ROWS and similar_calls > 0
