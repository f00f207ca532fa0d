"""Which candidate pairs are copies, and each group's best copy: one candidate
component at a time (no copy relation crosses components, so they are the unit of
parallel work).

Pairs are taken nearest first. A pair whose images are already in one group is not
verified (the group already holds them); nor is a pair whose groups were already told
apart by their content (another exposure, a moved subject, its own fine detail): a burst
frame that is not a copy of the original is not a copy of the original's crop either.
Crops and screenshots join their groups last, the most faithful link first: a crop can
lie inside a burst's next frame as well as inside its original; one already linked into
a group is not verified against the group's other members. Once a group stands, each
member is compared with its best copy: one with nothing in common with it leaves.
Images (copies_images.py) reads each image once. Each verdict comes from the cache
(store/verdicts.py), else from settle() (signatures only), else from verify_pair()
(SIFT geometry and content). A pair the app declares as versions, or a RAW+JPEG pair
of one shot, is never a copy edge (versions.py).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

from . import verify
from .bestcopy import apply_verdicts, choose_best, describe
from .copies_images import DECODE_SIZE, Images, read_facts, source_facts  # noqa: F401
from .verify import Verdict

VERIFIER_VERSION = 4  # bump when verify.py's verdicts change: cached ones are then redone
# Not-a-copy verdicts that compared the same region's content, at comparable detail:
# the two groups show different moments or exposures, so no member of one is a copy of
# the other. ("content differs" is not one: two framings of one photo differ too.)
CONTENT_REASONS = ("another exposure", "subject moved", "own fine detail")
CONTAINED = ("crop", "screenshot/border")  # verdict kinds of a frame inside another
FEATURED = 100  # SIFT keypoints each of two pictures has when no match tells
ANOTHER_FRAME = 0.85  # overlap (IoU) of a similar shot that is another frame of the view


def verdict_from_dict(found: dict) -> Verdict:
    return Verdict(**{k: v for k, v in found.items() if k in Verdict.__dataclass_fields__})


def tells_apart(v: Verdict) -> bool:
    return not v.is_copy and any(r in v.reason for r in CONTENT_REASONS)


@dataclass
class Component:
    """One candidate component: everything needed to decide it."""

    keys: list
    pairs: list  # (key a, key b, score), any order
    cached: dict = field(default_factory=dict)  # (a, b) -> Verdict, a/b as in pairs
    versions: set = field(default_factory=set)  # frozenset({a, b}) pairs of versions


@dataclass
class GroupFound:
    members: list  # keys, best copy first
    kinds: list  # per member: "best copy" or what it is to the best copy
    reasons: list  # per member, in words
    best_reason: str
    facts: list  # bestcopy.Facts per member
    similar: list = field(default_factory=list)  # (key outside, key inside, reason)


@dataclass
class Decided:
    groups: list
    verdicts: dict  # (a, b) -> Verdict decided here (for the cache)
    counts: dict
    unverified: int = 0
    unreadable: list = field(default_factory=list)  # (key, message)
    seconds: dict = field(default_factory=dict)  # per stage (Images.seconds)


class _Groups:
    """Union-find over keys, with the pairs of groups their content told apart."""

    def __init__(self, keys):
        self.parent = {k: k for k in keys}
        self.apart: dict = {k: set() for k in keys}

    def find(self, x):
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def join(self, a, b) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        self.parent[rb] = ra
        self.apart[ra] |= self.apart.pop(rb)
        for other in self.apart[ra]:
            self.apart[other].discard(rb)
            self.apart[other].add(ra)

    def keep_apart(self, a, b) -> None:
        ra, rb = self.find(a), self.find(b)
        self.apart[ra].add(rb)
        self.apart[rb].add(ra)

    def kept_apart(self, a, b) -> bool:
        return self.find(b) in self.apart[self.find(a)]


def decide(component: Component, images: Images, deadline: Optional[float] = None) -> Decided:
    """The copy groups of one candidate component (see the module's docstring)."""
    counts = {"cached": 0, "settled": 0, "verified": 0, "skipped": 0}
    known: dict = dict(component.cached)
    new: dict = {}
    groups = _Groups(component.keys)
    unverified = 0
    pending = []
    # A crop or screenshot with a pending link into a group is not verified against the
    # group's other members (its best copy is compared with it directly in the end),
    # nor against another frame linked into that group too: which group such a frame
    # joins is decided between groups, never within one.
    linked: dict = {}  # crop or screenshot -> the members it was made of (pending links)
    for a, b, _ in sorted(component.pairs, key=lambda p: p[2]):
        if frozenset((a, b)) in component.versions:
            continue
        if groups.find(a) == groups.find(b) or groups.kept_apart(a, b) \
                or _linked_into(groups, linked, a, b):
            counts["skipped"] += 1
            continue
        verdict = known.get((a, b))
        if verdict is not None:
            counts["cached"] += 1
        else:
            if deadline is not None and time.monotonic() > deadline:
                unverified += 1
                continue
            verdict, stage = _verify(images, a, b)
            if verdict is None:
                continue
            counts[stage] += 1
            known[(a, b)] = new[(a, b)] = verdict
        if verdict.is_copy and verdict.kind in CONTAINED:
            pending.append((a, b, verdict))
            made, source = (b, a) if verdict.which_is_source == "a" else (a, b)
            linked.setdefault(made, []).append(source)
        elif verdict.is_copy:
            groups.join(a, b)
        elif tells_apart(verdict):
            groups.keep_apart(a, b)
    # A frame inside another (a crop, a photo in a screenshot) can lie inside two
    # frames of a burst alike: such links join last, the most faithful first, never
    # across groups whose content was told apart, and a copy made of one source joins
    # that one group only.
    attached = set()
    for a, b, verdict in sorted(pending, key=lambda p: -p[2].fidelity):
        copy_side = {"a": b, "b": a}.get(verdict.which_is_source)
        if groups.kept_apart(a, b) or (copy_side in attached
                                       and groups.find(a) != groups.find(b)):
            continue
        groups.join(a, b)
        attached.add(copy_side)
    found = []
    members_of: dict = {}
    for key in component.keys:
        members_of.setdefault(groups.find(key), []).append(key)
    for members in members_of.values():
        if len(members) > 1:
            found.extend(_describe(members, known, new, images, deadline))
    _similar_shots(found, known, groups)
    return Decided(found, new, counts, unverified, sorted(images.failed.items(), key=str),
                   dict(images.seconds))


def _linked_into(groups: _Groups, linked: dict, a, b) -> bool:
    """Whether either of a pair is a crop or screenshot already linked into the other's
    group, or both are linked into one group."""
    into_a = {groups.find(k) for k in linked.get(a, ())}
    into_b = {groups.find(k) for k in linked.get(b, ())}
    return groups.find(b) in into_a or groups.find(a) in into_b or bool(into_a & into_b)


def _verify(images: Images, a, b) -> tuple[Optional[Verdict], str]:
    pa, pb = images.signatures(a), images.signatures(b)
    if pa is None or pb is None:
        return None, "verified"
    started = time.perf_counter()
    verdict = verify.settle(pa, pb)
    images.seconds["settle"] += time.perf_counter() - started
    if verdict is not None:
        return verdict, "settled"
    facts = images.facts_of(a), images.facts_of(b)
    images.features(pa)
    images.features(pb)
    started = time.perf_counter()
    verdict = verify.verify_pair(pa, pb, *facts)
    images.seconds["verify"] += time.perf_counter() - started
    return verdict, "verified"


def _lookup(known: dict, a, b) -> Optional[Verdict]:
    if (a, b) in known:
        return known[(a, b)]
    if (b, a) in known:
        return known[(b, a)].swapped()
    return None


def _describe(members: list, known: dict, new: dict, images: Images,
              deadline) -> list[GroupFound]:
    """The groups of members joined by copy links: one, unless the group-level check
    below sends some away."""
    members = sorted(members, key=str)
    local = {}
    for x in range(len(members)):
        for y in range(x + 1, len(members)):
            v = _lookup(known, members[x], members[y])
            if v is not None:
                local[(x, y)] = v
    facts = apply_verdicts([images.facts_of(k) for k in members], local)
    best, best_reason = choose_best(facts)
    # Each member's relation to the best copy in words: verified directly where the
    # group holds it only through others (a crop of a re-encoded copy).
    for x, key in enumerate(members):
        if x == best or _lookup(known, members[best], key) is not None:
            continue
        if deadline is not None and time.monotonic() > deadline:
            break
        verdict, _ = _verify(images, members[best], key)
        if verdict is not None:
            known[(members[best], key)] = new[(members[best], key)] = verdict
    # Another frame of the same moment (a burst's next frame: nearly the whole view,
    # shifted) may join through a copy it happens to contain; told apart from the
    # best copy itself (which has more copies in the group), it leaves the group and is
    # listed as a similar shot.
    left = [x for x, key in enumerate(members) if x != best and _another_frame(
        _lookup(known, members[best], key)) and facts[x].copies < facts[best].copies]
    if left:
        kept = [k for x, k in enumerate(members) if x not in left]
        shots = [(members[x], members[best], _lookup(known, members[best], members[x]).reason)
                 for x in left]
        found = _describe(kept, known, new, images, deadline) if len(kept) > 1 else []
        if found:
            found[0].similar.extend(shots)
        return found
    # A member that has nothing in common with the best copy (no matching features,
    # no agreement as whole frames) joined through a false link elsewhere: two
    # screenshots of different photos in one viewer's window match on the window.
    # Such members leave, and form groups of their own by their own copy links.
    strangers = [key for x, key in enumerate(members) if x != best
                 and _nothing_in_common(_lookup(known, members[best], key))
                 and _featured(images, key) and _featured(images, members[best])]
    if strangers:
        kept = [k for k in members if k not in strangers]
        found = _describe(kept, known, new, images, deadline) if len(kept) > 1 else []
        for linked in _linked_sets(strangers, known):
            if len(linked) > 1:
                found.extend(_describe(linked, known, new, images, deadline))
        return found
    kinds, reasons = [], []
    for x, key in enumerate(members):
        if x == best:
            kinds.append("best copy")
            reasons.append(best_reason)
            continue
        v = _lookup(known, members[best], key)
        if v is not None and v.is_copy:
            kinds.append(v.kind)
            reasons.append(v.reason)
        else:
            # Joined through another member (two crops of one original need not overlap).
            via = next((other for other in members if other != key
                        and getattr(_lookup(known, other, key), "is_copy", False)), None)
            kinds.append(describe(facts, best)[x])
            reasons.append(f"a copy of {via}, which is in this group" if via is not None
                           else "in this group through its other members")
    order = [best] + [x for x in range(len(members)) if x != best]
    return [GroupFound([members[x] for x in order], [kinds[x] for x in order],
                       [reasons[x] for x in order], best_reason, [facts[x] for x in order])]


def _nothing_in_common(v: Optional[Verdict]) -> bool:
    return v is not None and not v.is_copy and v.kind == "different"


def _featured(images: Images, key) -> bool:
    """Enough keypoints that finding no match between two pictures means they share
    nothing (a featureless crop of a smooth dial matches nothing either)."""
    prepared = images.signatures(key)
    features = None if prepared is None else prepared.features
    return features is not None and len(features.points) >= FEATURED


def _linked_sets(keys: list, known: dict) -> list[list]:
    """keys split into the sets their copy verdicts among themselves join."""
    groups = _Groups(keys)
    for x, a in enumerate(keys):
        for b in keys[x + 1:]:
            if getattr(_lookup(known, a, b), "is_copy", False):
                groups.join(a, b)
    sets: dict = {}
    for key in keys:
        sets.setdefault(groups.find(key), []).append(key)
    return list(sets.values())


def _another_frame(v: Optional[Verdict]) -> bool:
    return v is not None and not v.is_copy and v.kind == "similar shot" \
        and v.overlap >= ANOTHER_FRAME


def _similar_shots(found: list, known: dict, groups: _Groups) -> None:
    """Verified look-alikes of each group's members kept out of it (bursts, brackets)."""
    by_root = {groups.find(g.members[0]): g for g in found}
    for (a, b), v in known.items():
        if v.is_copy or v.kind != "similar shot":
            continue
        for inside, outside in ((a, b), (b, a)):
            group = by_root.get(groups.find(inside))
            if group is not None and groups.find(outside) != groups.find(inside):
                if not any(s[0] == outside for s in group.similar):
                    group.similar.append((outside, inside, v.reason))
