"""The Milvus backend beyond the contract suite: picking it from index_db, and the
catalogue over Milvus Lite (embedded: the same client API as a Milvus server)."""
from __future__ import annotations

import numpy as np
import pytest

from datasette_imgsim.store import (ItemResult, Store, Vec0Backend, backend_for, catalogue_path, connect,
                                    is_milvus)
from datasette_imgsim.store.milvus import MilvusBackend, client_args


def test_index_db_selects_backend(tmp_path):
    assert is_milvus("milvus://db.example:19530/photos")
    assert is_milvus("milvus+lite:/data/photos.milvus.db") and is_milvus("x/photos.milvus.db")
    assert not is_milvus("photos-imgsim.db") and not is_milvus(None)
    assert client_args("milvus://db.example:19531/photos") == {
        "uri": "http://db.example:19531", "db_name": "photos"}
    assert client_args("milvus://u:p@h/photos")["user"] == "u"
    assert client_args("milvus://h") == {"uri": "http://h:19530"}
    assert client_args("milvus+lite:/data/v.db") == {"uri": "/data/v.db"}
    conn = connect(str(tmp_path / "i.db"))
    assert isinstance(backend_for(conn, None), Vec0Backend)
    assert isinstance(backend_for(conn, str(tmp_path / "photos-imgsim.db")), Vec0Backend)
    # With Milvus the catalogue stays in SQLite beside the photos.
    assert catalogue_path(tmp_path / "photos.db", "milvus://h/db") == tmp_path / "photos-imgsim.db"


@pytest.fixture(scope="module")
def milvus(tmp_path_factory):
    return MilvusBackend(str(tmp_path_factory.mktemp("milvus") / "v.milvus.db"))


def test_store_over_milvus_lite(tmp_path, milvus):
    conn = connect(str(tmp_path / "catalogue.db"))
    store = Store(conn, milvus)
    spec, _ = store.create_index("photos", "path", "id", None, "cnn", "cosine", 64, "float")
    assert spec.params["milvus"]["collection"] == spec.vec_table
    rng = np.random.default_rng(0)
    vectors = rng.random((300, 64), dtype=np.float32)
    with conn:
        store.write(spec, [ItemResult(i + 1, "f", v) for i, v in enumerate(vectors)])
    assert milvus.count(spec) == 300
    found = store.knn(spec, vectors[10], 5)
    assert found[0][0] == 11 and found[0][1] == pytest.approx(0, abs=1e-6)
    allowed = store.item_ids_for(spec, range(200, 301))
    assert all(pk >= 200 for pk, _, _ in store.knn(spec, vectors[10], 10, allowed_item_ids=allowed))
    assert len(store.knn(spec, vectors[10], 10, allowed_item_ids=allowed)) == 10
    pks, positions, dist = store.neighbours(spec, 3)
    assert pks[:3] == [1, 2, 3] and positions.shape == (300, 3)
    # A rolled-back batch leaves orphan vectors in Milvus; the catalogue never returns them.
    try:
        with conn:
            store.write(spec, [ItemResult(999, "f", vectors[10] * 1.0001)])
            raise RuntimeError("crash before commit")
    except RuntimeError:
        pass
    assert 999 not in [pk for pk, _, _ in store.knn(spec, vectors[10], 5)]
    known = [i for (i,) in conn.execute("select item_id from _imgsim_items")]
    assert len(milvus.orphans(spec, known)) == 1
    with conn:
        store.drop_index(spec)
    assert not milvus.client.has_collection(spec.vec_table)


@pytest.mark.asyncio
async def test_index_search_and_serve_with_vectors_in_milvus_lite(path_db, tmp_path, photos):
    """--index-db / plugin config index_db naming Milvus: vectors there, the catalogue in
    the conventional sidecar, the photo database untouched; CLI and pages both work."""
    import hashlib
    import json

    from click.testing import CliRunner
    from datasette.app import Datasette
    from datasette.cli import cli

    from .helpers import jpeg_bytes

    before = hashlib.sha256(path_db.read_bytes()).hexdigest()
    milvus_db = str(tmp_path / "vectors.milvus.db")
    run = CliRunner().invoke
    result = run(cli, ["imgsim", "index", str(path_db), "--table", "photos", "--column", "path",
                       "--method", "histogram", "--workers", "1", "--index-db", milvus_db])
    assert result.exit_code == 0 and "9 indexed" in result.output, result.output
    assert hashlib.sha256(path_db.read_bytes()).hexdigest() == before
    assert path_db.with_name("photos-imgsim.db").exists()
    query = tmp_path / "q.jpg"
    query.write_bytes(jpeg_bytes(photos["coffee"]))
    found = json.loads(run(cli, ["imgsim", "search", str(path_db), str(query), "--table", "photos",
                                 "-k", "1", "--json", "--index-db", milvus_db]).output)
    assert found["results"][0]["image"] == "img/coffee.jpg"
    config = {"plugins": {"datasette-imgsim": {"index_db": milvus_db}}}
    try:
        ds = Datasette([str(path_db)], config=config)
    except TypeError:  # 0.65 reads plugin configuration from metadata
        ds = Datasette([str(path_db)], metadata=config)
    response = await ds.client.get("/photos/photos/-/similar/4.json?k=2")
    assert response.status_code == 200, response.text
    assert len(response.json()["results"]) == 2
