"""Duplicate-finding accuracy: planted copies among look-alike series, decided by
candidates + verification (datasette_imgsim.verify) against bare thresholds.

    python bench/duplicates_accuracy.py              # skimage photos + Debian's mate nature photos
    python bench/duplicates_accuracy.py --no-fetch   # scikit-image photos only

Each real photo P gives a series: the "original" O (a 70 %-wide window of P), 11
planted copies of O (JPEG q20/q30, resize to 25 %, blur, caption overlay, greyscale,
crops to 80 % and 64 %, mirror, a bordered copy, a screenshot inside a viewer's
window) and 4 look-alikes that are not copies (a burst's next frame: window shifted
3-5 %, slight zoom, a moving subject, sensor noise; bracketed exposures +-1 EV with
handheld shake; a panned second frame 20-30 % along). The mate-backgrounds package
(GPL-2+, Debian) is fetched with apt-get download into bench/out/mate (gitignored) once.

Pairs: every pair of images. Recall is over (original, copy) pairs, per copy family;
precision over every pair called a copy (copy-copy pairs of one series count as right).
The images are files of a photos table indexed with the default method (cnn), and
grouped by `duplicates` with its defaults (ImageIndex.duplicates: candidates, then
verification); a pair is found when both lie in one group (bare thresholds: when
within the threshold). Best copy: right when a group holding an original has it first.
A greyscale copy is made only of colour photos (of a grey one it is the photo itself).
"""
from __future__ import annotations

import argparse
import collections
import glob
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]
OUT = os.path.join(HERE, "out")

from copydetect import SKIMAGE_PHOTOS, _load, _skimage, overlay  # noqa: E402

from datasette_imgsim.images import load_image  # noqa: E402
from datasette_imgsim.verify import is_greyscale  # noqa: E402


def enc(p, quality=92, fmt="JPEG") -> bytes:
    out = io.BytesIO()
    options = {"quality": quality} if fmt == "JPEG" else {}
    Image.fromarray(np.ascontiguousarray(p)).save(out, fmt, **options)
    return out.getvalue()


def window(p, x0, width, zoom=1.0):
    h, w = p.shape[:2]
    cw, ch = int(w * width * zoom), int(h * zoom)
    y0 = (h - ch) // 2
    return cv2.resize(np.ascontiguousarray(p[y0:y0 + ch, x0:x0 + cw]), (int(w * width), h),
                      interpolation=cv2.INTER_AREA)


def exposure(p, ev):
    return np.clip(((p / 255.0) ** 2.2 * 2.0 ** ev) ** (1 / 2.2) * 255, 0, 255).astype(np.uint8)


def burst(P, rng):
    w = P.shape[1]
    f = window(P, int(w * rng.uniform(0.03, 0.05)), 0.7, rng.uniform(0.95, 0.98)).copy()
    h, fw = f.shape[:2]
    ph, pw = h // 3, fw // 3  # the subject moves
    y, x = rng.integers(0, h - ph), rng.integers(0, fw - pw - pw // 6)
    f[y:y + ph, x + pw // 6:x + pw // 6 + pw] = f[y:y + ph, x:x + pw].copy()
    return enc(np.clip(f + rng.normal(0, 2, f.shape), 0, 255).astype(np.uint8))


def screenshot(p, rng):
    h, w = p.shape[:2]
    W, H = int(max(w, h) * 1.6), int(max(w, h))
    img = Image.new("RGB", (W, H), (40, 40, 44))
    d = ImageDraw.Draw(img)
    d.rectangle([0, 0, W, 28], fill=(225, 225, 225))
    d.text((10, 8), "IMG_0042.jpg - Image Viewer", fill=(0, 0, 0))
    d.rectangle([0, 28, int(W * 0.18), H], fill=(60, 60, 66))
    for i in range(8):
        d.text((10, 40 + 22 * i), f"Album {i}", fill=(220, 220, 220))
    aw, ah = W - int(W * 0.18) - 20, H - 48
    s = min(aw / w, ah / h) * rng.uniform(0.85, 1.0)
    pw, ph = int(w * s), int(h * s)
    img.paste(Image.fromarray(p).resize((pw, ph), Image.LANCZOS),
              (int(W * 0.18) + 10 + (aw - pw) // 2, 38 + (ah - ph) // 2))
    return enc(np.asarray(img), fmt="PNG")


def bordered(p, rng):
    h, w = p.shape[:2]
    b = int(rng.uniform(0.05, 0.1) * max(h, w))
    canvas = np.full((h + 2 * b, w + 2 * b, 3), 255 if rng.random() < 0.5 else 0, np.uint8)
    canvas[b:b + h, b:b + w] = p
    return enc(canvas)


def crop_at(p, area, rng):
    h, w = p.shape[:2]
    side = np.sqrt(area)
    ch, cw = int(h * side), int(w * side)
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    return enc(p[y:y + ch, x:x + cw])


COPIES = {
    "jpeg q20": ("re-encode", lambda p, r: enc(p, 20)),
    "jpeg q30": ("re-encode", lambda p, r: enc(p, 30)),
    "resize 25%": ("resize", lambda p, r: enc(cv2.resize(p, (p.shape[1] // 4, p.shape[0] // 4),
                                                          interpolation=cv2.INTER_AREA))),
    "blur": ("blur", lambda p, r: enc(np.asarray(
        Image.fromarray(p).filter(ImageFilter.GaussianBlur(3))))),
    "caption overlay": ("overlay", lambda p, r: enc(overlay(0.15)(p))),
    "greyscale": ("greyscale", lambda p, r: enc(np.asarray(
        Image.fromarray(p).convert("L").convert("RGB")))),
    "crop 80%": ("crop", lambda p, r: crop_at(p, 0.8, r)),
    "crop 64%": ("crop", lambda p, r: crop_at(p, 0.64, r)),
    "mirror": ("mirror", lambda p, r: enc(np.ascontiguousarray(p[:, ::-1]))),
    "bordered": ("screenshot/border", bordered),
    "screenshot": ("screenshot/border", screenshot),
}
LOOKALIKES = {
    "burst frame": burst,
    # handheld: up to 1 % of shake between the exposures
    "bracket +1 EV": lambda P, r: enc(exposure(window(P, int(P.shape[1] * r.uniform(0, 0.01)),
                                                      0.7), 1)),
    "bracket -1 EV": lambda P, r: enc(exposure(window(P, int(P.shape[1] * r.uniform(0, 0.01)),
                                                      0.7), -1)),
    "panned frame": lambda P, r: enc(window(P, int(P.shape[1] * r.uniform(0.2, 0.3)), 0.7)),
}


def mate_photos() -> list[str]:
    folder = os.path.join(OUT, "mate")
    nature = os.path.join(folder, "x", "usr", "share", "backgrounds", "mate", "nature")
    if not glob.glob(os.path.join(nature, "*.jpg")):
        os.makedirs(folder, exist_ok=True)
        try:
            if not glob.glob(os.path.join(folder, "mate-backgrounds_*.deb")):
                subprocess.run(["apt-get", "download", "mate-backgrounds"], cwd=folder,
                               check=True, capture_output=True, timeout=300)
            (deb,) = glob.glob(os.path.join(folder, "mate-backgrounds_*.deb"))
            subprocess.run(["dpkg-deb", "-x", deb, os.path.join(folder, "x")], check=True,
                           capture_output=True, timeout=300)
        except (subprocess.SubprocessError, ValueError, OSError) as e:
            print(f"mate-backgrounds not available ({e}); scikit-image photos only",
                  file=sys.stderr)
    return sorted(glob.glob(os.path.join(nature, "*.jpg")))


def build(fetch: bool, seed: int = 0):
    """[(series, role, name, bytes)]: role original, copy or look-alike."""
    rng = np.random.default_rng(seed)
    bases = {n: _skimage(n) for n in SKIMAGE_PHOTOS if n not in ("page", "text")}
    if fetch:
        bases.update({"mate-" + os.path.basename(p)[:-4]: _load(p) for p in mate_photos()})
    items = []
    for series, P in bases.items():
        O = window(P, 0, 0.7)
        items.append((series, "original", "original", enc(O)))
        for name, (_, make) in COPIES.items():
            if name == "greyscale" and is_greyscale(O):
                # A greyscale copy of a greyscale photo is the photo re-encoded at the
                # same quality: no copy of its own (either would be a right best copy).
                continue
            items.append((series, "copy", name, make(O, rng)))
        for name, make in LOOKALIKES.items():
            items.append((series, "look-alike", name, make(P, rng)))
    return items


def dedup_phash(pixels) -> np.ndarray:
    """imagededup's PHash: 32x32 grey (PIL), 2-D DCT, 8x8 low frequencies against their
    median without the DC term; its default duplicate threshold is Hamming 10."""
    from scipy.fft import dct

    x = np.asarray(Image.fromarray(pixels).convert("L").resize((32, 32), Image.LANCZOS), np.float64)
    low = dct(dct(x, axis=0, norm="ortho"), axis=1, norm="ortho")[:8, :8].ravel()
    return low > np.median(low[1:])


def hamming(bits: np.ndarray) -> np.ndarray:
    b = bits.astype(np.float32) * 2 - 1
    return (b.shape[1] - b @ b.T) / 2


def vectors(name, pixels):
    from datasette_imgsim.plugins import get_method

    m = get_method(name)
    out = [m.vectors_for(m.extract(pixels[i:i + 16]).vectors, m.metric)
           for i in range(0, len(pixels), 16)]
    return np.concatenate(out)


def indexed_table(items, folder: str, methods) -> str:
    """The items as files of a photos table, indexed as `datasette imgsim index` does
    (the duplicates command then reads them under the index's root)."""
    from datasette_imgsim import ImageIndex

    db = os.path.join(folder, "photos.db")
    conn = sqlite3.connect(db)
    conn.execute("create table photos (id integer primary key, path text)")
    for n, (series, role, name, data) in enumerate(items):
        ext = ".png" if data[:4] == b"\x89PNG" else ".jpg"
        path = os.path.join(folder, f"{n:04d}-{series}-{name.replace(' ', '_')}{ext}")
        with open(path, "wb") as f:
            f.write(data)
        conn.execute("insert into photos values (?, ?)", (n, path))
    conn.commit()
    conn.close()
    with ImageIndex.open(db, write=True, in_place=True) as index:
        index.build("photos", "path", methods=list(methods), workers=2)
    return db


def run_engine(db: str, workers: int):
    from datasette_imgsim import ImageIndex

    with ImageIndex.open(db) as index:
        return index.duplicates("photos", workers=workers, save=False)


def group_decider(found):
    group_of = {}
    for number, group in enumerate(found.groups):
        for m in group.members:
            group_of[int(m.pk)] = number
    return group_of, lambda i, j: i in group_of and group_of.get(i) == group_of.get(j)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-fetch", action="store_true")
    parser.add_argument("--limit", type=int, default=0, help="only the first N series")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    items = build(not args.no_fetch)
    if args.limit:
        keep = list(dict.fromkeys(s for s, *_ in items))[:args.limit]
        items = [it for it in items if it[0] in keep]
    n = len(items)
    print(f"{n} images in {len({s for s, *_ in items})} series", file=sys.stderr)
    times = {}
    folder = tempfile.mkdtemp(prefix="imgsim-dups-")
    try:
        t = time.perf_counter()
        db = indexed_table(items, folder, ["cnn"])
        times["index (cnn, the default)"] = time.perf_counter() - t
        t = time.perf_counter()
        found = run_engine(db, args.workers)
        times["duplicates, defaults (candidates + verification)"] = time.perf_counter() - t
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    decoded = [load_image(data, 256) for *_, data in items]
    phash = np.unpackbits(vectors("phash", decoded), axis=1)
    d_phash = hamming(phash)
    d_dedup = hamming(np.stack([dedup_phash(p) for p in decoded]))
    cnn = vectors("cnn", decoded)
    d_cnn = 1 - cnn @ cnn.T
    iu = np.triu_indices(n, 1)
    group_of, ours = group_decider(found)
    decide = {"ours (defaults: candidates + verification)": ours,
              "phash <= 10": lambda i, j: d_phash[i, j] <= 10,
              "phash <= 20": lambda i, j: d_phash[i, j] <= 20,
              "imagededup PHash <= 10": lambda i, j: d_dedup[i, j] <= 10,
              "cnn <= 0.05 (the old default)": lambda i, j: d_cnn[i, j] <= 0.05}
    report = evaluate(items, decide, iu)
    report["false copies (ours)"] = collections.Counter(
        f"{items[i][2]} ~ {items[j][2]}" for i, j in zip(*iu) if ours(i, j)
        and (items[i][0] != items[j][0] or "look-alike" in (items[i][1], items[j][1])))
    report["look-alikes in groups"] = [
        f"{items[int(m.pk)][0]}: {items[int(m.pk)][2]} as {m.kind} ({m.reason})"
        for g in found.groups for m in g.members if items[int(m.pk)][1] == "look-alike"]
    report["groups joining series"] = [
        " + ".join(f"{s} ({n})" for s, n in collections.Counter(
            items[int(m.pk)][0] for m in g.members).most_common())
        for g in found.groups if len({items[int(m.pk)][0] for m in g.members}) > 1]
    report["groups"] = [[(items[int(m.pk)][0], items[int(m.pk)][2], m.kind, m.reason)
                         for m in g.members] for g in found.groups]
    report["best copy"] = best_copies(items, found)
    report["times"] = times
    report["bounds"] = found.candidates
    report["counts"] = {"images": n, "pairs": len(iu[0]), **found.counts}
    report["stages"] = found.stages
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "duplicates_accuracy.json"), "w") as f:
        json.dump(report, f, indent=1, default=str)
    text = render(report)
    print(text)
    with open(os.path.join(OUT, "duplicates_accuracy.md"), "w") as f:
        f.write(text + "\n")


def evaluate(items, decide, iu):
    out = {}
    for label, called in decide.items():
        hits = collections.defaultdict(lambda: [0, 0])
        tp = fp = 0
        for i, j in zip(*iu):
            (si, ri, ni, _), (sj, rj, nj, _) = items[i], items[j]
            copy = called(i, j)
            same_picture = si == sj and "look-alike" not in (ri, rj)
            tp += copy and same_picture
            fp += copy and not same_picture
            if si == sj and {ri, rj} in ({"original", "copy"}, {"original", "look-alike"}):
                name = nj if ri == "original" else ni
                family = COPIES[name][0] if name in COPIES else "look-alike: " + name
                hits[family][0] += copy
                hits[family][1] += 1
        copies = [v for k, v in hits.items() if not k.startswith("look")]
        out[label] = {"families": {k: v[0] / v[1] for k, v in hits.items()},
                      "recall": sum(h for h, _ in copies) / sum(c for _, c in copies),
                      "precision": tp / max(tp + fp, 1), "false copies": fp}
    return out


def best_copies(items, found):
    """The group holding each original: right when its best copy is the original."""
    right = total = 0
    wrong = []
    for group in found.groups:
        members = [int(m.pk) for m in group.members]
        originals = [k for k in members if items[k][1] == "original"]
        if not originals:
            continue
        total += 1
        best = members[0]
        right += best in originals
        if best not in originals:
            wrong.append(f"{items[best][0]}: chose {items[best][2]} ({group.members[0].reason})")
    return {"right": right, "groups": total, "wrong": wrong}


def render(report) -> str:
    methods = [k for k, v in report.items() if isinstance(v, dict) and "families" in v]
    families = list(dict.fromkeys(f for m in methods for f in report[m]["families"]))
    lines = ["| pairs | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for family in families:
        lines.append(f"| {family} | " + " | ".join(f"{report[m]['families'][family]:.2f}"
                                                 for m in methods) + " |")
    lines.append("| **recall, plain copies** | " + " | ".join(
        f"**{report[m]['recall']:.3f}**" for m in methods) + " |")
    lines.append("| **precision** | " + " | ".join(
        f"**{report[m]['precision']:.3f}** ({report[m]['false copies']} false)"
        for m in methods) + " |")
    false = report["false copies (ours)"]
    if false:
        lines.append("\nLook-alikes called copies (ours): " + ", ".join(
            f"{k} x{c}" for k, c in false.most_common(12)))
    if report["look-alikes in groups"]:
        lines.append("\nLook-alikes grouped as copies (ours):" + "".join(
            f"\n- {line}" for line in report["look-alikes in groups"]))
    if report["groups joining series"]:
        lines.append("\nGroups joining two series (ours):" + "".join(
            f"\n- {line}" for line in report["groups joining series"]))
    b = report["best copy"]
    lines.append(f"\nBest copy: the original chosen in {b['right']} of {b['groups']} groups "
                 f"({100 * b['right'] / max(b['groups'], 1):.0f} %)"
                 + "".join(f"\n- {w}" for w in b["wrong"]))
    c, t = report["counts"], report["times"]
    bounds = " or ".join(f"{m} <= {b:g}" for m, b in report["bounds"].items())
    lines.append(f"\nCandidates: {bounds}. {c['images']} images, {c['pairs']} pairs, "
                 f"{c['candidates']} candidate pairs: {c['settled']} settled by signatures, "
                 f"{c['verified']} verified, {c['skipped']} decided by their groups.\n")
    lines.append("| stage | seconds |\n|---|---|")
    for stage, seconds in t.items():
        lines.append(f"| {stage} | {seconds:.1f} |")
    lines.append(projection(c, report["stages"]))
    return "\n".join(lines)


def projection(c, stages, n=100_000, cores=2) -> str:
    """The verification's cost per image and per pair (CPU seconds, every worker), and
    what 100k images would cost on 2 cores at a stated density of copies and series."""
    verified, decided = c["verified"], c["verified"] + c["settled"]
    per_pair = (stages.get("verify", 0) + stages.get("settle", 0)) / max(decided, 1)
    per_image = (stages.get("decode", 0) + stages.get("features", 0)
                 + stages.get("facts", 0)) / max(c["images"], 1)
    lines = ["\n| verification stage | CPU seconds | per unit |", "|---|---|---|"]
    units = {"decode": ("images", c["images"]), "features": ("images", c["images"]),
             "facts": ("images", c["images"]), "settle": ("pairs", decided),
             "verify": ("verified pairs", verified), "candidates": ("run", 1)}
    for stage, seconds in stages.items():
        unit, count = units.get(stage, ("run", 1))
        lines.append(f"| {stage} | {seconds:.1f} | {1000 * seconds / max(count, 1):.1f} ms "
                     f"per {unit.rstrip('s') if count == 1 else unit[:-1]} |")
    for share, pairs in ((0.1, 2), (0.2, 3)):
        seconds = n * share * (per_image + pairs * per_pair) / cores
        lines.append(f"\nProjected at {n:,} images, {100 * share:.0f} % of them in candidate "
                     f"pairs ({pairs} pairs each to verify), {cores} cores: "
                     f"{seconds / 60:.1f} min plus the candidate search.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
