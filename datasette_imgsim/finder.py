"""Verified duplicate groups of one table, end to end:

    candidates.candidate_pairs (every index's neighbours under a generous bound)
    -> candidates.components (independent parts)
    -> cached verdicts (store/verdicts.py) -> copies.decide per component (in worker
       processes when asked) -> new verdicts cached -> groups with their best copy
    -> versions.version_pairs listed apart

The table's rows are read through source_conn (image values, paths) and files only
under the index's allowed roots (thumbnails.image_source).
"""
from __future__ import annotations

import time
from typing import Any, Callable, Optional

from . import copies
from .candidates import candidate_pairs, components, default_bounds
from .copies import VERIFIER_VERSION, Component, Images
from .duplicates import Duplicates, Group, Member, parse_threshold
from .errors import NotFound
from .neighbours import connected_groups
from .source import image_value
from .store import IndexSpec, Store
from .store import verdicts as verdict_store
from .versions import version_pairs

# A component with fewer pairs to verify than this is decided in the calling process.
PARALLEL_MIN_PAIRS = 64


def row_loader(conn, spec: IndexSpec, roots) -> Callable[[Any], Any]:
    """key -> thumbnails.ImageSource of the row's image (BLOB, or a file under roots)."""
    from .thumbnails import image_source

    def load(key):
        return image_source(image_value(conn, spec, key), spec.root, roots)

    return load


def verified_duplicates(store: Store, spec: IndexSpec, threshold: Any, k: int, exact_limit: int,
                        specs: Optional[list] = None, source_conn=None, workers: int = 1,
                        opener: Optional[tuple] = None, seconds: Optional[float] = None,
                        memo: Optional[dict] = None, extra_roots=(), save: bool = True,
                        progress: Optional[Callable[[int, int], None]] = None) -> Duplicates:
    """Copy groups of spec's table, best copy first; spec is the table's default index
    (its fingerprints key the verdict cache). specs: the indexes proposing candidates
    (default: spec alone); a threshold bounds spec's candidates. opener: (database path,
    index_db) for worker processes to open the index themselves (workers > 1). seconds:
    a time budget after which the remaining pairs are left unverified (counted)."""
    started = time.monotonic()
    deadline = started + seconds if seconds else None
    source_conn = source_conn or store.conn
    specs = specs or [spec]
    if threshold is not None and threshold != "":
        bounds = {spec.method: parse_threshold(threshold, spec.method)}
        specs = [spec]
    else:
        bounds = default_bounds(specs)
    found = candidate_pairs(store, specs, bounds, k, exact_limit)
    candidates_seconds = round(time.monotonic() - started, 3)
    keys = found.keys
    fingerprints = store.fingerprints(spec)
    versions = version_pairs(source_conn, spec, keys)
    pairs = [(keys[a], keys[b], score) for (a, b), score in found.pairs.items()]
    cached = _cached(store, spec, pairs, fingerprints, memo)
    parts = []
    for members in components(len(keys), found.pairs):
        chosen = {keys[i] for i in members}
        parts.append(Component(sorted(chosen, key=str), []))
    part_of = {key: n for n, part in enumerate(parts) for key in part.keys}
    for pair in versions:
        a, b = tuple(pair)
        if a in part_of and part_of[a] == part_of.get(b):
            parts[part_of[a]].versions.add(pair)
    for a, b, score in pairs:
        part = parts[part_of[a]]
        part.pairs.append((a, b, score))
        if (a, b) in cached:
            part.cached[(a, b)] = cached[(a, b)]
    roots = list(store.roots(spec.table)) + [str(r) for r in extra_roots]
    decided = _run(parts, source_conn, spec, roots, workers, opener, deadline, progress)
    new = {}
    counts = {"candidates": len(pairs), "cached": 0, "settled": 0, "verified": 0, "skipped": 0}
    groups, unverified, unreadable, stages = [], 0, [], {}
    for result in decided:
        new.update(result.verdicts)
        for name, n in result.counts.items():
            counts[name] += n
        unverified += result.unverified
        unreadable += [list(item) for item in result.unreadable]
        for stage, seconds in result.seconds.items():
            stages[stage] = stages.get(stage, 0.0) + seconds
        groups += [_group(g, found, _stored(source_conn, spec)) for g in result.groups]
    _remember(store, spec, new, fingerprints, memo, save)
    groups.sort(key=lambda g: (-len(g.members), str(g.members[0].pk)))
    result = Duplicates(spec.method, spec.metric, bounds.get(spec.method), found.indexed,
                        groups, 0.0, True, _versions(versions, source_conn, spec, roots), bounds,
                        counts, unverified, unreadable)
    result.stages = {"candidates": candidates_seconds,
                     **{k: round(v, 3) for k, v in stages.items()}}
    result.seconds = time.monotonic() - started
    return result


def _cached(store, spec, pairs, fingerprints, memo) -> dict:
    wanted = [(a, b) for a, b, _ in pairs]
    stored = verdict_store.load(store.conn, spec.table, wanted, fingerprints, VERIFIER_VERSION)
    out = {}
    for (a, b), (verdict, swapped) in stored.items():
        out[(a, b)] = copies.verdict_from_dict(verdict_store.swap(verdict) if swapped else verdict)
    if memo is not None:
        for a, b in wanted:
            key = _memo_key(spec, fingerprints, a, b)
            if (a, b) not in out and key in memo:
                out[(a, b)] = memo[key]
    return out


def _memo_key(spec, fingerprints, a, b) -> tuple:
    return (spec.table, a, b, fingerprints.get(a), fingerprints.get(b), VERIFIER_VERSION)


def _remember(store, spec, new: dict, fingerprints, memo, save) -> None:
    if memo is not None:
        for (a, b), verdict in new.items():
            memo[_memo_key(spec, fingerprints, a, b)] = verdict
    if save and new:
        verdict_store.save(store.conn, spec.table,
                           {pair: v.to_dict() for pair, v in new.items()}, fingerprints,
                           VERIFIER_VERSION)


def _run(parts, source_conn, spec, roots, workers, opener, deadline, progress) -> list:
    """copies.decide over every component: here, or the larger ones in worker processes."""
    big = [p for p in parts if len(p.pairs) - len(p.cached) >= PARALLEL_MIN_PAIRS]
    if workers <= 1 or opener is None or len(big) < 2:
        big = []
    small = [p for p in parts if not any(p is b for b in big)]
    results, done, total = [], 0, len(parts)
    if big:
        from .copies_pool import decide_in_workers

        for result in decide_in_workers(big, opener, spec, roots, workers, deadline):
            results.append(result)
            done += 1
            if progress:
                progress(done, total)
    load = row_loader(source_conn, spec, roots)
    for part in small:
        results.append(copies.decide(part, Images(load), deadline))
        done += 1
        if progress:
            progress(done, total)
    return results


def _stored(conn, spec) -> Callable[[Any], Any]:
    """key -> the image column's value as stored when it is a path (None for a BLOB)."""
    def value(key):
        try:
            found = image_value(conn, spec, key)
        except NotFound:
            return None
        return found if isinstance(found, str) else None

    return value


def _group(found: copies.GroupFound, candidates, stored) -> Group:
    position = {key: n for n, key in enumerate(candidates.keys)}
    best = found.members[0]
    members = []
    for key, kind, reason, facts in zip(found.members, found.kinds, found.reasons, found.facts):
        pair = tuple(sorted((position[best], position[key])))
        distance = 0.0 if key == best else candidates.distances.get(pair, (None, None))[1]
        members.append(Member(key, distance, kind, stored(key), facts.size, facts.width,
                              facts.height, reason, _facts(facts)))
    similar = [{"pk": outside, "of": inside, "reason": reason}
               for outside, inside, reason in found.similar]
    return Group(members, similar)


def _facts(facts) -> dict:
    return {"file": facts.path, "format": facts.format, "jpeg_quality": facts.jpeg_quality,
            "taken_at": facts.taken_at, "greyscale": facts.is_grey,
            "mirrored": facts.is_mirrored, "overlay": facts.has_overlay, "raw": facts.is_raw}


def _versions(versions: dict, source_conn, spec, roots) -> list:
    """Groups of versions of one photo (RAW+JPEG, the app's own versions)."""
    keys = sorted({k for pair in versions for k in pair}, key=str)
    position = {k: n for n, k in enumerate(keys)}
    load = row_loader(source_conn, spec, roots)
    stored = _stored(source_conn, spec)
    groups = []
    for members in connected_groups(len(keys), [tuple(position[k] for k in pair)
                                                for pair in versions]):
        chosen = [keys[i] for i in members]
        out = []
        for key in chosen:
            reasons = sorted({r for pair, r in versions.items() if key in pair})
            try:
                facts = copies.read_facts(load, key)
            except NotFound:
                facts = copies.Facts()
            out.append(Member(key, None, "version", stored(key), facts.size, facts.width,
                              facts.height, "; ".join(reasons), _facts(facts)))
        groups.append(Group(out, kind="versions"))
    return groups
