"""candidates.candidate_pairs: the generous first stage of duplicate finding."""
from __future__ import annotations

import pytest

from datasette_imgsim.candidates import candidate_pairs, components, default_bounds
from datasette_imgsim.errors import DuplicatesError
from datasette_imgsim.store import Store, connect

from .helpers import index_photos


@pytest.fixture
def store(path_db):
    index_photos(path_db, "phash", "hog")
    return Store(connect(str(path_db)))


def test_bounds_come_from_the_methods_that_propose_candidates(store):
    specs = store.indexes("photos")
    assert default_bounds(specs) == {"phash": 22.0}  # hog proposes none of its own
    hog = [s for s in specs if s.method == "hog"]
    assert default_bounds(hog) == {"hog": 0.05}  # alone: its duplicate threshold


def test_pairs_are_ordered_scored_and_joined_by_key(store):
    specs = store.indexes("photos")
    found = candidate_pairs(store, specs, {"phash": 22.0, "hog": 0.2})
    assert sorted(found.keys) == list(range(1, 10)) and found.indexed == 9
    assert found.pairs and all(a < b for a, b in found.pairs)
    assert all(0 <= score <= 1 + 1e-6 for score in found.pairs.values())
    chelsea, crop = (found.keys.index(pk) for pk in (2, 3))  # chelsea.jpg, chelsea_crop.jpg
    assert (min(chelsea, crop), max(chelsea, crop)) in found.pairs
    method, distance = found.distances[(min(chelsea, crop), max(chelsea, crop))]
    assert method in ("phash", "hog") and distance >= 0
    only_phash = candidate_pairs(store, specs, {"phash": 22.0})
    assert set(only_phash.pairs) <= set(found.pairs)
    assert [sorted(c) for c in components(len(found.keys), found.pairs)]


def test_zero_neighbours_is_an_error(store):
    with pytest.raises(DuplicatesError):
        candidate_pairs(store, store.indexes("photos"), k=0)


def test_a_large_index_takes_its_pairs_from_the_graph_search(store, monkeypatch):
    # Above exact_limit, an index with a current graph gives its pairs through
    # Store.neighbours (here its exact fallback stands in for the graph).
    specs = store.indexes("photos")
    hog = [s for s in specs if s.method == "hog"]
    scanned = candidate_pairs(store, hog, {"hog": 0.2})
    calls = []
    real = Store.neighbours

    def neighbours(self, spec, k, exact=False):
        calls.append(spec.method)
        return real(self, spec, k, exact=True)

    monkeypatch.setattr(Store, "graph_ready", lambda self, spec: True)
    monkeypatch.setattr(Store, "neighbours", neighbours)
    through_graph = candidate_pairs(store, hog, {"hog": 0.2}, exact_limit=1)
    assert calls == ["hog"]
    assert {tuple(sorted((through_graph.keys[a], through_graph.keys[b])))
            for a, b in through_graph.pairs} == {
        tuple(sorted((scanned.keys[a], scanned.keys[b]))) for a, b in scanned.pairs}
