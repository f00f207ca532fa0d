import csv as csvlib
import io
import json
import sqlite3

import numpy as np
import pytest
from click.testing import CliRunner
from datasette.cli import cli
from PIL import Image

from datasette_imgsim.duplicates import (
    DuplicatesError, classify, connected_groups, distances, find_duplicates,
    neighbour_pairs, parse_threshold, prepared)
from datasette_imgsim.store import Store, connect

from .helpers import index_photos, jpeg_bytes, query_dict


def test_connected_groups_joins_chains_and_drops_singletons():
    groups = connected_groups(7, [(0, 1, 0.1), (1, 2, 0.1), (4, 5, 0.0), (5, 4, 0.0)])
    assert sorted(map(sorted, groups)) == [[0, 1, 2], [4, 5]]


def test_connected_groups_takes_an_edge_array_and_matches_a_plain_union_find():
    rng = np.random.default_rng(3)
    for _ in range(50):
        n = int(rng.integers(1, 80))
        edges = rng.integers(0, n, size=(int(rng.integers(0, 120)), 2))
        parent = list(range(n))

        def find(x):
            while parent[x] != x:
                x = parent[x]
            return x

        for a, b in edges.tolist():
            ra, rb = find(a), find(b)
            parent[max(ra, rb)] = min(ra, rb)
        expected = {}
        for i in range(n):
            expected.setdefault(find(i), []).append(i)
        expected = [g for g in expected.values() if len(g) > 1]
        assert connected_groups(n, edges) == expected
        assert connected_groups(n, [tuple(e) for e in edges.tolist()]) == expected


def test_a_large_index_groups_through_its_graph_without_reading_every_vector(tmp_path,
                                                                             monkeypatch):
    from datasette_imgsim.store import ItemResult, ann
    from datasette_imgsim.store.vec0 import Vec0Backend

    monkeypatch.setattr(ann, "MIN_ROWS", 50)  # a graph for 1,200 rows
    rng = np.random.default_rng(0)
    centres = rng.random((120, 64)).astype(np.float32)
    vectors = np.repeat(centres, 10, axis=0) + 0.02 * rng.random((1200, 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store = Store(connect(str(tmp_path / "big.db")))
    spec, _ = store.create_index("photos", "path", "id", None, "cnn", "cosine", 64, "float")
    with store.conn:
        store.write(spec, [ItemResult(i + 1, "f", v) for i, v in enumerate(vectors)])
    exact = find_duplicates(store, spec, 0.01, describe=False)
    assert len(exact.groups) == 120
    store.refresh_ann(spec, save=True)
    spec = store.index("photos", "cnn")  # with the graph's parameters

    def whole_matrix(*args):
        raise AssertionError("the whole vector matrix was read")

    monkeypatch.setattr(Vec0Backend, "vectors", whole_matrix)
    through_graph = find_duplicates(store, spec, 0.01, describe=False, exact_limit=100)
    assert [[m.pk for m in g.members] for g in through_graph.groups] == \
        [[m.pk for m in g.members] for g in exact.groups]
    assert [m.distance for g in through_graph.groups for m in g.members] == pytest.approx(
        [m.distance for g in exact.groups for m in g.members], abs=1e-5)


def test_distances_match_sqlite_vec_conventions():
    a = np.array([[1, 0], [0, 2]], np.float32)
    assert np.allclose(distances(prepared(a, "cosine"), prepared(a, "cosine"), "cosine"),
                       [[0, 1], [1, 0]], atol=1e-6)
    bits = np.packbits(np.array([[0] * 64, [1] * 3 + [0] * 61]), axis=1)
    assert distances(prepared(bits, "hamming"), prepared(bits, "hamming"), "hamming")[0, 1] == 3
    assert np.allclose(distances(a, a, "l2")[0, 1], np.sqrt(5))
    assert np.allclose(distances(a, a, "l1")[0, 1], 3)


def planted(n=3000, groups=100, dims=64, seed=0):
    """Random unit vectors with `groups` planted pairs of near-copies."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dims)).astype(np.float32)
    for g in range(groups):
        vectors[n - 1 - g] = vectors[g] + rng.normal(scale=0.05, size=dims)
    return prepared(vectors, "cosine")


def test_cells_find_what_the_exact_scan_finds():
    vectors = planted()
    exact = {tuple(sorted(p[:2])) for p in neighbour_pairs(vectors, "cosine", 0.05)}
    cells = {tuple(sorted(p[:2])) for p in neighbour_pairs(vectors, "cosine", 0.05, exact_limit=100)}
    assert len(exact) == 100
    assert len(exact & cells) >= 98 and cells <= exact


def test_each_image_links_to_at_most_k_neighbours():
    vectors = prepared(np.ones((50, 8), np.float32), "cosine")  # 50 identical images
    pairs = list(neighbour_pairs(vectors, "cosine", 0.1, k=3))
    assert len(pairs) <= 50 * 4
    assert len(connected_groups(50, pairs)) == 1


def test_parse_threshold():
    assert parse_threshold(None, "phash") == 10 and parse_threshold("0.2", "cnn") == 0.2
    for bad in ["lots", -1, float("nan")]:
        with pytest.raises(DuplicatesError):
            parse_threshold(bad, "cnn")


def test_classify():
    assert classify("phash", 0, is_best=True) == "best copy"
    assert classify("phash", 0) == "exact copy"
    assert classify("phash", 0, same_size=False) == "edited copy"
    assert classify("phash", 30) == "similar shot"


@pytest.fixture
def dup_db(tmp_path, photos):
    """The photos plus copies of chelsea (smaller, recompressed, cropped), an exact copy
    of the rocket and a BLOB row."""
    folder = tmp_path / "img"
    folder.mkdir()
    chelsea = photos["chelsea"]
    files = {name: jpeg_bytes(pixels) for name, pixels in photos.items()}
    small = np.asarray(Image.fromarray(chelsea).resize((225, 150), Image.LANCZOS))
    files["chelsea_small"] = jpeg_bytes(small)
    files["chelsea_q30"] = jpeg_bytes(chelsea, quality=30)
    files["chelsea_crop"] = jpeg_bytes(chelsea[15:285, 20:430])
    files["rocket_copy"] = files["rocket"]
    db = tmp_path / "photos.db"
    conn = sqlite3.connect(db)
    conn.execute("create table photos (id integer primary key, name text, path blob)")
    for name, data in files.items():
        (folder / f"{name}.jpg").write_bytes(data)
        conn.execute("insert into photos (name, path) values (?, ?)", (name, f"img/{name}.jpg"))
    conn.execute("insert into photos (name, path) values (?, ?)", ("coffee_blob", files["coffee"]))
    conn.commit()
    conn.close()
    return index_photos(db, "phash", "hog")


def names(db):
    return query_dict(db, "select id, name from photos")


def test_find_duplicates_groups_copies_best_first(dup_db):
    store = Store(connect(str(dup_db)))
    found = find_duplicates(store, store.index("photos", "phash"))
    named = names(dup_db)
    groups = [[(named[m.pk], m.kind) for m in g.members] for g in found.groups]
    chelsea = next(g for g in groups if ("chelsea", "best copy") in g)
    assert {n for n, _ in chelsea} == {"chelsea", "chelsea_small", "chelsea_q30", "chelsea_crop"}
    assert chelsea[0] == ("chelsea", "best copy")  # the largest, least compressed
    rocket = next(g for g in groups if any(n == "rocket" for n, _ in g))
    assert sorted(k for _, k in rocket) == ["best copy", "exact copy"]
    coffee = next(g for g in groups if any(n == "coffee" for n, _ in g))
    assert {n for n, _ in coffee} == {"coffee", "coffee_blob"}
    members = {named[m.pk]: m for g in found.groups for m in g.members}
    assert (members["chelsea_small"].width, members["chelsea_small"].height) == (225, 150)
    assert members["coffee_blob"].image is None and members["coffee_blob"].size > 1000
    assert members["chelsea"].distance == 0


def test_threshold_zero_keeps_only_identical_images(dup_db):
    store = Store(connect(str(dup_db)))
    found = find_duplicates(store, store.index("photos", "hog"), threshold=0)
    named = names(dup_db)
    assert sorted(sorted(named[m.pk] for m in g.members) for g in found.groups) == [
        ["coffee", "coffee_blob"], ["rocket", "rocket_copy"]]
    assert {m.kind for g in found.groups for m in g.members} == {"best copy", "exact copy"}


def test_cli_no_verify_groups_by_the_threshold(dup_db):
    result = CliRunner().invoke(cli, ["imgsim", "duplicates", str(dup_db), "--table", "photos",
                                      "--method", "phash", "--no-verify", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["method"] == "phash" and data["threshold"] == 10 and data["verified"] is False
    member = data["groups"][0]["members"][0]
    assert set(member) >= {"pk", "distance", "kind", "image", "size", "width", "height"}
    text = CliRunner().invoke(cli, ["imgsim", "duplicates", str(dup_db), "--table", "photos",
                                    "--method", "hog", "--threshold", "0.05", "--no-verify"])
    assert text.exit_code == 0 and "best copy" in text.output and "img/chelsea.jpg" in text.output
    assert "unverified" in text.output


def test_cli_verified_by_default_in_three_formats(dup_db):
    named = names(dup_db)
    result = CliRunner().invoke(cli, ["imgsim", "duplicates", str(dup_db), "--table", "photos",
                                      "--format", "json", "--workers", "1"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["verified"] is True and data["candidates"] == {"phash": 22.0}
    chelsea = next(g for g in data["groups"] if named[g["members"][0]["pk"]] == "chelsea")
    kinds = {named[m["pk"]]: (m["kind"], m["reason"]) for m in chelsea["members"]}
    assert kinds["chelsea_crop"][0] == "crop" and "crop of" in kinds["chelsea_crop"][1]
    assert kinds["chelsea_small"] == ("same picture", "same picture, resized to 50 %")
    csv_out = CliRunner().invoke(cli, ["imgsim", "duplicates", str(dup_db), "--table", "photos",
                                       "--format", "csv", "--workers", "1"])
    rows = list(csvlib.DictReader(io.StringIO(csv_out.output)))
    keep = [r for r in rows if r["action"] == "keep"]
    assert {named[int(r["pk"])] for r in keep} >= {"chelsea", "rocket"}
    crop = next(r for r in rows if r["path"] == "img/chelsea_crop.jpg")
    assert crop["action"] == "duplicate" and named[int(crop["best_copy"])] == "chelsea"
    text = CliRunner().invoke(cli, ["imgsim", "duplicates", str(dup_db), "--table", "photos"])
    assert text.exit_code == 0 and "groups of copies" in text.output
    # The verdicts were kept in the index database: the second run verified nothing.
    again = json.loads(CliRunner().invoke(cli, ["imgsim", "duplicates", str(dup_db), "--table",
                                                "photos", "--json"]).output)
    assert again["pairs"]["verified"] == again["pairs"]["settled"] == 0
    assert again["pairs"]["cached"] > 0 and again["groups"] == data["groups"]
    bad = CliRunner().invoke(cli, ["imgsim", "duplicates", str(dup_db), "--table", "photos",
                                   "--method", "cnn"])
    assert bad.exit_code == 1 and "no 'cnn' index" in bad.output
