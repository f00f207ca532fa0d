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
Best copy: the group holding each original, members shuffled, facts from the files
(bestcopy.facts_of) and the group's verdicts; right when the original is chosen.
"""
from __future__ import annotations

import argparse
import collections
import glob
import io
import json
import os
import subprocess
import sys
import time

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]
OUT = os.path.join(HERE, "out")

from copydetect import SKIMAGE_PHOTOS, _load, _skimage, overlay  # noqa: E402

from datasette_imgsim import verify  # noqa: E402
from datasette_imgsim.bestcopy import apply_verdicts, choose_best, facts_of  # noqa: E402
from datasette_imgsim.images import load_image  # noqa: E402

CANDIDATE_PHASH = 22
CANDIDATE_CNN = 0.35  # 0.25 misses screenshots (the photo on 40-70 % of the frame)


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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-fetch", action="store_true")
    parser.add_argument("--limit", type=int, default=0, help="only the first N series")
    parser.add_argument("--phash-bound", type=float, default=CANDIDATE_PHASH)
    parser.add_argument("--cnn-bound", type=float, default=CANDIDATE_CNN)
    args = parser.parse_args()
    items = build(not args.no_fetch)
    if args.limit:
        keep = list(dict.fromkeys(s for s, *_ in items))[:args.limit]
        items = [it for it in items if it[0] in keep]
    n = len(items)
    print(f"{n} images in {len({s for s, *_ in items})} series", file=sys.stderr)
    times = collections.defaultdict(float)

    t = time.perf_counter()
    decoded = [load_image(data, 256) for *_, data in items]
    times["decode (reduced)"] = time.perf_counter() - t
    t = time.perf_counter()
    phash = np.unpackbits(vectors("phash", decoded), axis=1)
    times["phash vectors (index time)"] = time.perf_counter() - t
    t = time.perf_counter()
    try:
        cnn = vectors("cnn", decoded)
    except Exception as e:  # noqa: BLE001 - the cnn runtime may be missing
        print(f"cnn unavailable ({e}); candidates from phash only", file=sys.stderr)
        cnn = None
    times["cnn vectors (index time)"] = time.perf_counter() - t
    d_phash = hamming(phash)
    d_dedup = hamming(np.stack([dedup_phash(p) for p in decoded]))

    t = time.perf_counter()
    d_cnn = 1 - cnn @ cnn.T if cnn is not None else None
    near = d_phash <= args.phash_bound
    if d_cnn is not None:
        near |= d_cnn <= args.cnn_bound
    iu = np.triu_indices(n, 1)
    candidates = [(i, j) for i, j in zip(*iu) if near[i, j]]
    times["candidates"] = time.perf_counter() - t

    t = time.perf_counter()
    prepared = [verify.prepare(p, features=False) for p in decoded]
    times["signatures"] = time.perf_counter() - t
    t = time.perf_counter()
    verdicts, unsettled = {}, []
    for i, j in candidates:
        v = verify.settle(prepared[i], prepared[j])
        if v is None:
            unsettled.append((i, j))
        else:
            verdicts[(i, j)] = v
    times["cheap settle"] = time.perf_counter() - t
    t = time.perf_counter()
    need = sorted({k for pair in unsettled for k in pair})
    for k in need:
        verify._prepared(prepared[k])
    times["SIFT features"] = time.perf_counter() - t
    t = time.perf_counter()
    facts = [facts_of(data) for *_, data in items]
    for i, j in unsettled:
        verdicts[(i, j)] = verify.verify_pair(prepared[i], prepared[j], facts[i], facts[j])
    times["verification"] = time.perf_counter() - t

    decide = {"ours (candidates + verification)": lambda i, j: verdicts.get((i, j)) is not None
              and verdicts[(i, j)].is_copy,
              "candidates only (upper bound)": lambda i, j: near[i, j],
              "phash <= 10": lambda i, j: d_phash[i, j] <= 10,
              "phash <= 20": lambda i, j: d_phash[i, j] <= 20,
              "imagededup PHash <= 10": lambda i, j: d_dedup[i, j] <= 10}
    if d_cnn is not None:
        decide["cnn <= 0.05 (today's default)"] = lambda i, j: d_cnn[i, j] <= 0.05
    report = evaluate(items, decide, iu)
    report["false copies (ours)"] = collections.Counter(
        f"{items[i][2]} ~ {items[j][2]}: {v.kind}" for (i, j), v in verdicts.items()
        if v.is_copy and (items[i][0] != items[j][0] or "look-alike" in (items[i][1], items[j][1])))
    report["best copy"] = best_copies(items, verdicts, facts)
    report["times"] = dict(times)
    report["bounds"] = {"phash": args.phash_bound, "cnn": args.cnn_bound}
    report["counts"] = {"images": n, "pairs": len(iu[0]), "candidates": len(candidates),
                        "settled cheaply": len(candidates) - len(unsettled),
                        "verified": len(unsettled), "images with SIFT": len(need)}
    text = render(report)
    print(text)
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "duplicates_accuracy.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(OUT, "duplicates_accuracy.json"), "w") as f:
        json.dump(report, f, indent=1, default=str)


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


def best_copies(items, verdicts, facts, seed=1):
    rng = np.random.default_rng(seed)
    edges = [(i, j) for (i, j), v in verdicts.items() if v.is_copy]
    parent = list(range(len(items)))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in edges:
        parent[find(i)] = find(j)
    right = total = 0
    wrong = []
    for o, (series, role, *_) in enumerate(items):
        if role != "original":
            continue
        group = [k for k in range(len(items)) if find(k) == find(o)]
        if len(group) < 2:
            continue
        group = list(rng.permutation(group))
        local = {}  # verdicts by positions in the shuffled group, "a" the first
        for a in range(len(group)):
            for b in range(a + 1, len(group)):
                i, j = group[a], group[b]
                if (i, j) in verdicts:
                    local[(a, b)] = verdicts[(i, j)]
                elif (j, i) in verdicts:
                    local[(a, b)] = verdicts[(j, i)].swapped()
        members = apply_verdicts([facts_of(items[k][3]) for k in group], local)
        best, reason = choose_best(members)
        total += 1
        right += group[best] == o
        if group[best] != o:
            wrong.append(f"{series}: chose {items[group[best]][2]} ({reason})")
    return {"right": right, "groups": total, "wrong": wrong}


def render(report) -> str:
    methods = [k for k in report if k not in ("best copy", "times", "counts", "bounds",
                                              "false copies (ours)")]
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
    b = report["best copy"]
    lines.append(f"\nBest copy: the original chosen in {b['right']} of {b['groups']} groups "
                 f"({100 * b['right'] / max(b['groups'], 1):.0f} %)"
                 + "".join(f"\n- {w}" for w in b["wrong"]))
    c, t = report["counts"], report["times"]
    lines.append(f"\nCandidates: phash <= {report['bounds']['phash']:g} or cnn <= "
                 f"{report['bounds']['cnn']:g}.")
    lines.append(f"\n{c['images']} images, {c['pairs']} pairs, {c['candidates']} candidates, "
                 f"{c['settled cheaply']} settled cheaply, {c['verified']} verified "
                 f"({c['images with SIFT']} images needed SIFT)\n")
    lines.append("| stage | seconds | per unit |\n|---|---|---|")
    units = {"decode (reduced)": c["images"], "signatures": c["images"], "candidates": c["pairs"],
             "cheap settle": c["candidates"], "SIFT features": c["images with SIFT"],
             "verification": c["verified"], "phash vectors (index time)": c["images"],
             "cnn vectors (index time)": c["images"]}
    for stage, seconds in t.items():
        per = seconds / max(units.get(stage, 1), 1)
        lines.append(f"| {stage} | {seconds:.2f} | {per * 1000:.2f} ms |")
    lines.append(projection(c, t))
    return "\n".join(lines)


def projection(c, t, n=100_000, cores=2) -> str:
    """Verification at 100k images from an existing index (vectors not recomputed)."""
    per = {k: t[k] / max(u, 1) for k, u in (("decode (reduced)", c["images"]),
                                            ("signatures", c["images"]),
                                            ("cheap settle", c["candidates"]),
                                            ("SIFT features", c["images with SIFT"]),
                                            ("verification", c["verified"]))}
    lines = [f"\nProjected at {n:,} images on {cores} cores (candidate search itself: "
             "duplicates.neighbour_pairs, ~40 s today):"]
    for label, share, pairs_per in (("this set's density (every image in a 16-image series)",
                                     None, None), ("a library with 20 % of images in series, "
                                                   "3 candidate pairs each", 0.2, 3)):
        if share is None:  # pairs_per: candidate pairs each image is in
            share, pairs_per = 1.0, 2 * c["candidates"] / c["images"]
        unsettled = pairs_per * (c["verified"] / max(c["candidates"], 1))
        sift = c["images with SIFT"] / c["images"]
        seconds = n * share * (per["decode (reduced)"] + per["signatures"]
                               + pairs_per / 2 * per["cheap settle"] + sift * per["SIFT features"]
                               + unsettled / 2 * per["verification"]) / cores
        lines.append(f"- {label}: {seconds / 60:.1f} min")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
