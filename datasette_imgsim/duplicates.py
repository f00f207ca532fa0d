"""Duplicate groups. By default (finder.py) candidate pairs are verified as copies; with
verify=False, as here, each image's nearest neighbours under a bare threshold are joined
into connected groups with union-find.

The work is a sequence of pure steps over one index's vectors:

    candidates.near_pairs (the HNSW graph's batch search, or an exact/cell-wise scan)
    -> connected_groups (union-find) -> describe (file sizes, dimensions, distance to
    each group's best copy, from the grouped rows' vectors only)

The neighbour search itself is in neighbours.py and store/.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from .candidates import near_pairs
from .images import image_size, resolve_path
from .source import image_value
from .errors import DuplicatesError, ImageError, NotFound
from .neighbours import (DEFAULT_NEIGHBOURS, EXACT_LIMIT, cells, connected_groups,  # noqa: F401
                         distances, neighbour_pairs, prepared)
from .store import IndexSpec, Store

# Each method's own defaults (Method.duplicate_threshold, copy_threshold,
# exact_distance) were calibrated with bench/accuracy.py --calibrate on real photos:
# each keeps unrelated pictures out and as few similar shots (another frame of the same
# scene) as the method allows, so those are grouped only when a larger threshold asks.
# A method that sets none (a plugin's) gets this:
FALLBACK_THRESHOLD = 0.05
# Grouped rows whose vectors (and file facts) are held at once while groups are described.
VECTORS_AT_ONCE = 20_000


def _method(name: str):
    from .plugins import get_methods

    return get_methods().get(name)


def default_threshold(method: str) -> float:
    found = _method(method)
    if found is None or found.duplicate_threshold is None:
        return FALLBACK_THRESHOLD
    return found.duplicate_threshold


def copy_threshold(method: str) -> float:
    found = _method(method)
    if found is None or found.copy_threshold is None:
        return default_threshold(method)
    return found.copy_threshold


def exact_distance(method: str) -> float:
    found = _method(method)
    return found.exact_distance if found is not None else 0.0


def parse_threshold(value: Any, method: str) -> float:
    if value is None or value == "":
        return default_threshold(method)
    try:
        threshold = float(value)
    except (TypeError, ValueError):
        raise DuplicatesError(f"threshold must be a number, not {value!r}") from None
    if not threshold >= 0 or threshold == float("inf"):
        raise DuplicatesError(f"threshold must be zero or more, not {value!r}")
    return threshold


# --- groups with their facts ---------------------------------------------------------


@dataclass
class Member:
    pk: Any
    distance: Optional[float]  # to the group's best copy (None when not measured)
    kind: str  # "best copy", a verdict kind ("same picture", "crop", ...), or by
    # distance alone (--no-verify): "exact copy", "edited copy", "similar shot"
    image: Any = None  # the path as stored, or None for a BLOB
    size: Optional[int] = None  # bytes
    width: Optional[int] = None
    height: Optional[int] = None
    reason: str = ""  # in words: why it is the best copy, or what it is to it
    facts: dict = field(default_factory=dict)  # format, jpeg_quality, taken_at, ...

    def to_dict(self) -> dict:
        return {"pk": self.pk, "kind": self.kind, "reason": self.reason,
                "distance": None if self.distance is None else round(self.distance, 6),
                "image": self.image, "size": self.size, "width": self.width,
                "height": self.height, **self.facts}


@dataclass
class Group:
    members: list[Member] = field(default_factory=list)
    # Verified look-alikes kept out of the group: {"pk", "of", "reason"}.
    similar_shots: list = field(default_factory=list)
    kind: str = "copies"  # or "versions": what the app or the camera made of one shot

    def to_dict(self) -> dict:
        found = {"kind": self.kind, "members": [m.to_dict() for m in self.members]}
        if self.kind == "copies":
            found["similar_shots"] = self.similar_shots
        return found


@dataclass
class Duplicates:
    method: str
    metric: str
    threshold: Optional[float]
    indexed: int
    groups: list[Group]
    seconds: float = 0.0
    verified: bool = True
    versions: list[Group] = field(default_factory=list)
    candidates: dict = field(default_factory=dict)  # method -> bound
    counts: dict = field(default_factory=dict)  # pairs: candidates, cached, settled, ...
    unverified: int = 0  # candidate pairs left undecided (out of time)
    unreadable: list = field(default_factory=list)  # [pk, message]
    stages: dict = field(default_factory=dict)  # seconds per stage (CPU, all workers)

    def to_dict(self) -> dict:
        return {"method": self.method, "metric": self.metric, "threshold": self.threshold,
                "verified": self.verified, "candidates": self.candidates,
                "indexed": self.indexed, "groups": [g.to_dict() for g in self.groups],
                "versions": [g.to_dict() for g in self.versions], "pairs": self.counts,
                "unverified": self.unverified, "unreadable": self.unreadable,
                "seconds": round(self.seconds, 3), "stages": self.stages}


def find_duplicates(store: Store, spec: IndexSpec, threshold: Any = None,
                    k: int = DEFAULT_NEIGHBOURS, describe: bool = True,
                    exact_limit: int = EXACT_LIMIT, verify: bool = False, **options) -> Duplicates:
    """The index's duplicate groups, largest first. verify=True: candidates verified
    as copies (finder.verified_duplicates, which takes **options); else grouped by a
    bare distance threshold of spec's method (describe=False skips reading files)."""
    if verify:
        from .finder import verified_duplicates

        return verified_duplicates(store, spec, threshold, k, exact_limit, **options)
    import time

    started = time.monotonic()
    threshold = parse_threshold(threshold, spec.method)
    if k < 1:
        raise DuplicatesError("neighbours must be at least 1")
    pks, pairs, _ = near_pairs(store, spec, threshold, k, exact_limit, groups_only=True)
    components = connected_groups(len(pks), pairs)
    limits = (exact_distance(spec.method), copy_threshold(spec.method))
    groups = []
    for chunk in _chunks(components, VECTORS_AT_ONCE):
        # Only these groups' vectors at a time: at 1M rows the whole matrix is 5 GB.
        rows = [i for c in chunk for i in c]
        vectors = dict(zip(rows, prepared(store.vectors_of(spec, [pks[i] for i in rows]),
                                          spec.metric)))
        facts = _row_facts(store, spec, [pks[i] for i in rows]) if describe else {}
        groups += [_group(spec, component, pks, vectors, facts, limits) for component in chunk]
    groups.sort(key=lambda g: (-len(g.members), str(g.members[0].pk)))
    return Duplicates(spec.method, spec.metric, threshold, len(pks), groups,
                      time.monotonic() - started, verified=False)


def _chunks(components: list, rows: int):
    """The components in runs of about `rows` rows."""
    run, size = [], 0
    for component in components:
        run.append(component)
        size += len(component)
        if size >= rows:
            yield run
            run, size = [], 0
    if run:
        yield run


def _group(spec, component, pks, vectors, facts, limits) -> Group:
    def quality(i):
        size, width, height = facts.get(pks[i], (None, None, None, None))[1:]
        return ((width or 0) * (height or 0), size or 0)

    # The best copy by distance alone: the most pixels, then the largest file, then
    # the row indexed first.
    best = max(sorted(component), key=quality)
    d = distances(vectors[best][None, :], np.stack([vectors[i] for i in component]),
                  spec.metric)[0]
    members = []
    for i, distance in zip(component, d.tolist()):
        image, size, width, height = facts.get(pks[i], (None, None, None, None))
        # float32 rounding leaves identical vectors ~1e-7 apart.
        distance = 0.0 if i == best or distance < 1e-5 else distance
        members.append(Member(pks[i], distance, classify(spec.method, distance, i == best,
                                                         quality(i) == quality(best), limits),
                              image, size, width, height))
    members.sort(key=lambda m: (m.kind != "best copy", m.distance, str(m.pk)))
    return Group(members)


def classify(method: str, distance: float, is_best: bool = False, same_size: bool = True,
             limits: Optional[tuple] = None) -> str:
    """What a member is to its group's best copy, judged by distance alone. limits:
    (exact_distance, copy_threshold) of the method, when the caller has them already."""
    if is_best:
        return "best copy"
    exact, copy = limits or (exact_distance(method), copy_threshold(method))
    if distance <= exact + 1e-6 and same_size:
        return "exact copy"
    if distance <= copy + 1e-6:
        return "edited copy"
    return "similar shot"


def _row_facts(store: Store, spec: IndexSpec, pks: list) -> dict:
    """pk -> (image value, bytes, width, height), from the file or BLOB."""
    facts = {}
    for pk in pks:
        try:
            value = image_value(store.conn, spec, pk)
        except NotFound:
            value = None
        facts[pk] = image_facts(value, spec.root or ".")
    return facts


def image_facts(value, root) -> tuple:
    """(value as shown, size in bytes, width, height) of a path or BLOB; Nones where unknown."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        return (None, len(data), *_dimensions(data))
    if value is None or not str(value).strip():
        return (value, None, None, None)
    path = resolve_path(str(value).strip(), root)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(256 * 1024)
            dims = _dimensions(head)
            if dims == (None, None) and size > len(head):
                f.seek(0)
                dims = _dimensions(f.read())
    except OSError:
        return (value, None, None, None)
    return (value, size, *dims)


def _dimensions(data: bytes) -> tuple:
    try:
        return image_size(data)
    except ImageError:
        return (None, None)
