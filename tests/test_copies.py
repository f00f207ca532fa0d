"""copies.decide: the order pairs are decided in, what is skipped, and the groups."""
from __future__ import annotations

import numpy as np
from PIL import Image

from datasette_imgsim.copies import Component, Images, decide, read_facts, tells_apart
from datasette_imgsim.thumbnails import ImageSource
from datasette_imgsim.verify import Verdict

from .helpers import jpeg_bytes

COPY = Verdict(True, "same picture", "same picture, re-encoded")
CROP = Verdict(True, "crop", "crop of 64 % of the original", which_is_source="a")
BURST = Verdict(False, "similar shot", "similar shot: 90 % overlap, the subject moved")
APART = Verdict(False, "similar shot", "similar shot: 30 % overlap")  # no content compared


class NoImages(Images):
    """Every verdict must come from the cache: reading an image fails the test."""

    def __init__(self):
        super().__init__(lambda key: (_ for _ in ()).throw(AssertionError(f"read {key}")))

    def facts_of(self, key):
        from datasette_imgsim.bestcopy import Facts

        return Facts(width=100, height=100)


def test_a_pair_inside_one_group_is_not_verified_again():
    part = Component(["o", "a", "b"], [("o", "a", 0.1), ("o", "b", 0.2), ("a", "b", 0.3)],
                     {("o", "a"): COPY, ("o", "b"): COPY})
    found = decide(part, NoImages())
    assert found.counts == {"cached": 2, "settled": 0, "verified": 0, "skipped": 1}
    assert len(found.groups) == 1 and sorted(found.groups[0].members) == ["a", "b", "o"]


def test_groups_told_apart_by_content_stay_apart():
    # The crop lies inside the burst's next frame too, and that pair comes first; but
    # crops join last, the most faithful link first, and the burst was told apart from
    # the original by its content.
    inside_burst = Verdict(True, "crop", "crop of 85 % of the original", which_is_source="b",
                           fidelity=0.94)
    part = Component(["o", "crop", "burst"],
                     [("crop", "burst", 0.1), ("o", "crop", 0.2), ("o", "burst", 0.3)],
                     {("o", "crop"): Verdict(**{**CROP.to_dict(), "fidelity": 0.99}),
                      ("o", "burst"): BURST, ("crop", "burst"): inside_burst})
    found = decide(part, NoImages())
    (group,) = found.groups
    assert sorted(group.members) == ["crop", "o"] and group.members[0] == "o"
    assert group.similar == [("burst", "o", BURST.reason)]
    # A later pair between told-apart groups is not verified at all.
    part.pairs.append(("burst", "o2", 0.4))
    part.keys.append("o2")
    part.cached[("o", "o2")] = COPY
    part.pairs.append(("o", "o2", 0.05))
    assert decide(part, NoImages()).counts["skipped"] == 1
    assert tells_apart(BURST) and not tells_apart(APART) and not tells_apart(COPY)


def test_partial_overlap_does_not_keep_groups_apart():
    # Two crops of one photo that only overlap say nothing about each other's source.
    part = Component(["o", "c1", "c2"], [("c1", "c2", 0.1), ("o", "c1", 0.2), ("o", "c2", 0.3)],
                     {("c1", "c2"): APART, ("o", "c1"): CROP, ("o", "c2"): CROP})
    (group,) = decide(part, NoImages()).groups
    assert sorted(group.members) == ["c1", "c2", "o"]


def test_versions_are_never_copy_edges():
    part = Component(["raw", "jpg"], [("raw", "jpg", 0.0)], {("raw", "jpg"): COPY},
                     {frozenset(("raw", "jpg"))})
    assert decide(part, NoImages()).groups == []


def test_real_images_best_copy_and_reasons(photos):
    chelsea = photos["chelsea"]
    files = {"original": jpeg_bytes(chelsea, 92), "q30": jpeg_bytes(chelsea, 30),
             "crop": jpeg_bytes(chelsea[40:260, 60:380]),
             "grey": jpeg_bytes(np.asarray(Image.fromarray(chelsea).convert("L").convert("RGB"))),
             "rocket": jpeg_bytes(photos["rocket"])}
    images = Images(lambda key: ImageSource(files[key], None, key))
    keys = sorted(files)
    pairs = [(a, b, 0.5) for i, a in enumerate(keys) for b in keys[i + 1:]]
    found = decide(Component(keys, pairs), images)
    (group,) = found.groups
    assert group.members[0] == "original", group.best_reason
    kinds = dict(zip(group.members, group.kinds))
    assert kinds == {"original": "best copy", "q30": "same picture", "crop": "crop",
                     "grey": "greyscale copy"}
    reasons = dict(zip(group.members, group.reasons))
    assert reasons["crop"].startswith("crop of ") and "%" in reasons["crop"]
    assert found.counts["verified"] + found.counts["settled"] < len(pairs)


def test_an_unreadable_image_costs_its_pairs_only(photos):
    good = jpeg_bytes(photos["coffee"])
    files = {"a": good, "b": good, "broken": b"\xff\xd8\xff not a jpeg"}
    images = Images(lambda key: ImageSource(files[key], None, key))
    found = decide(Component(["a", "b", "broken"], [("a", "broken", 0.1), ("a", "b", 0.2)]),
                   images)
    assert [sorted(g.members) for g in found.groups] == [["a", "b"]]
    assert [key for key, _ in found.unreadable] == ["broken"]


def test_read_facts_of_a_file(tmp_path, photos):
    path = tmp_path / "x.jpg"
    path.write_bytes(jpeg_bytes(photos["coffee"], 75))
    facts = read_facts(lambda key: ImageSource(None, path, "f"), "x")
    assert (facts.width, facts.height, facts.jpeg_quality) == (600, 400, 75)
    assert facts.size == path.stat().st_size and facts.path == str(path)


def test_a_crop_joins_one_source_only():
    # The crop lies inside the original and, almost as faithfully, inside a burst frame
    # nothing told apart: it joins the original's group, not both.
    crop_of_o = Verdict(True, "crop", "crop of 64 %", which_is_source="a", fidelity=0.99)
    crop_of_burst = Verdict(True, "crop", "crop of 70 %", which_is_source="a", fidelity=0.95)
    part = Component(["o", "crop", "burst"], [("burst", "crop", 0.1), ("o", "crop", 0.2)],
                     {("o", "crop"): crop_of_o, ("burst", "crop"): crop_of_burst})
    (group,) = decide(part, NoImages()).groups
    assert sorted(group.members) == ["crop", "o"]


def test_another_frame_of_the_view_leaves_the_group():
    # Joined through a copy it shares, the burst frame is another frame of the view
    # next to the best copy itself: it is listed as a similar shot, not as a copy.
    frame = Verdict(False, "similar shot", "similar shot: 91 % overlap", overlap=0.91)
    part = Component(["o", "q30", "small", "x_burst"],
                     [("o", "q30", 0.1), ("o", "small", 0.1), ("q30", "x_burst", 0.2)],
                     {("o", "q30"): COPY, ("o", "small"): COPY, ("q30", "x_burst"): COPY,
                      ("o", "x_burst"): frame})
    (group,) = decide(part, NoImages()).groups
    assert sorted(group.members) == ["o", "q30", "small"]
    assert ("x_burst", "o", frame.reason) in group.similar


def test_members_with_nothing_in_common_with_the_best_copy_form_their_own_group():
    # Two screenshots of different photos in one viewer's window match on the window:
    # one false link joins two groups. The other group's members, compared with the
    # best copy, have nothing in common with it: they leave and keep their own group.
    nothing = Verdict(False, "different", "different: no matching features")
    keys = ["g", "g_q30", "g_shot", "b", "b_q30", "b_shot"]
    cached = {("g", "g_q30"): COPY, ("g", "g_shot"): COPY, ("b", "b_q30"): COPY,
              ("b", "b_shot"): COPY, ("g_shot", "b_shot"): COPY}
    cross = [(a, b) for a in keys[:3] for b in keys[3:] if (a, b) != ("g_shot", "b_shot")]
    cached.update({pair: nothing for pair in cross})
    part = Component(keys, [(a, b, 0.1) for a, b in cached], cached)
    groups = decide(part, Keypoints(500)).groups
    assert sorted(sorted(g.members) for g in groups) == [["b", "b_q30", "b_shot"],
                                                         ["g", "g_q30", "g_shot"]]
    # Featureless pictures (a smooth dial and its crops) match nothing even when they
    # are copies: no evidence either way, and the member stays.
    (group,) = decide(part, Keypoints(20)).groups
    assert len(group.members) == 6
    # Merely a similar shot of the best copy (two crops of one photo) is no reason to
    # leave either: the member stays joined through its copy.
    cached.update({pair: APART for pair in cross})
    (group,) = decide(Component(keys, part.pairs, cached), Keypoints(500)).groups
    assert len(group.members) == 6


class Keypoints(NoImages):
    """Every picture with this many SIFT keypoints; verdicts still from the cache only."""

    def __init__(self, count: int):
        super().__init__()
        self.count = count

    def signatures(self, key):
        from types import SimpleNamespace

        return SimpleNamespace(features=SimpleNamespace(points=np.zeros((self.count, 2))))


def test_a_crop_linked_into_a_group_is_not_verified_against_its_other_members():
    part = Component(["o", "q30", "crop", "crop_q30"],
                     [("o", "q30", 0.1), ("o", "crop", 0.2), ("q30", "crop", 0.3),
                      ("crop", "crop_q30", 0.35), ("o", "crop_q30", 0.4)],
                     {("o", "q30"): COPY, ("o", "crop"): CROP, ("crop", "crop_q30"): COPY,
                      ("o", "crop_q30"): CROP})
    found = decide(part, NoImages())
    # q30 ~ crop: the crop already lies in q30's group. crop ~ crop_q30 is verified: two
    # copies of one crop are one group whichever group they join.
    assert found.counts == {"cached": 4, "settled": 0, "verified": 0, "skipped": 1}
    (group,) = found.groups
    assert sorted(group.members) == ["crop", "crop_q30", "o", "q30"]

